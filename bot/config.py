"""One frozen Settings object, read once from the environment (and `.env`)."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from dotenv import dotenv_values

from bot.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_SECRET_LENGTH = 32
_TOKEN_PATTERN = re.compile(r"^\d{5,15}:[A-Za-z0-9_-]{30,64}$")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Everything configurable. Secrets are kept out of repr so they never reach a log."""

    root: Path
    db_path: Path
    var_dir: Path
    secret: str
    secret_generated: bool
    session_ttl: timedelta
    log_level: str
    nlu_backend: str
    rasa_url: str | None
    telegram_token: str | None
    telegram_base_url: str | None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def responses_dir(self) -> Path:
        return self.root / "responses"

    @property
    def nlu_dir(self) -> Path:
        return self.root / "nlu"

    def __repr__(self) -> str:
        return f"Settings(db_path={self.db_path!s}, ttl={self.session_ttl}, log={self.log_level})"


def read_environment(env: Mapping[str, str] | None, root: Path) -> dict[str, str]:
    """The environment over `.env` (or `env` itself, for tests): how every setting is read."""
    if env is not None:
        return dict(env)
    merged = {k: v for k, v in dotenv_values(root / ".env").items() if v is not None}
    merged.update(os.environ)
    return merged


def _secret(values: Mapping[str, str], var_dir: Path, require: bool) -> tuple[str, bool]:
    """Use HULPWIJZER_SECRET; for the terminal, fall back to a generated key file (0600)."""
    given = values.get("HULPWIJZER_SECRET", "").strip()
    if given:
        if len(given) < MIN_SECRET_LENGTH:
            raise ConfigError(
                f"HULPWIJZER_SECRET is shorter than {MIN_SECRET_LENGTH} characters: "
                "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
            )
        return given, False
    if require:
        raise ConfigError(
            "HULPWIJZER_SECRET is not set: a server channel needs it. Put it in .env (see "
            ".env.example), e.g. from "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'`."
        )
    key_file = var_dir / "secret.key"
    if key_file.exists():
        text = key_file.read_text(encoding="utf-8").strip()
        if len(text) >= MIN_SECRET_LENGTH:
            return text, False
        raise ConfigError(f"{key_file} is damaged (too short): delete it to generate a new one.")
    var_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(48))
    return key_file.read_text(encoding="utf-8").strip(), True


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    require_secret: bool = False,
    root: Path | None = None,
    overrides: Mapping[str, str] | None = None,
) -> Settings:
    """Read configuration; raise ConfigError with one sentence naming the variable and the fix."""
    base = root or PROJECT_ROOT
    values = {**read_environment(env, base), **(overrides or {})}
    var_dir = Path(values.get("HULPWIJZER_VAR", "") or base / "var")
    db_path = Path(values.get("HULPWIJZER_DB", "") or var_dir / "hulpwijzer.sqlite3")
    ttl_text = values.get("HULPWIJZER_SESSION_TTL_HOURS", "24").strip() or "24"
    try:
        ttl_hours = float(ttl_text)
    except ValueError:
        raise ConfigError(
            f"HULPWIJZER_SESSION_TTL_HOURS must be a number of hours, not {ttl_text!r}."
        ) from None
    if not 0 < ttl_hours <= 24 * 30:
        raise ConfigError("HULPWIJZER_SESSION_TTL_HOURS must be between 0 and 720 hours.")
    log_level = (values.get("HULPWIJZER_LOG_LEVEL", "WARNING").strip() or "WARNING").upper()
    if log_level not in _LOG_LEVELS:
        raise ConfigError(f"HULPWIJZER_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}.")
    backend = (values.get("NLU_BACKEND", "embedded").strip() or "embedded").lower()
    if backend not in ("embedded", "rasa", "none"):
        raise ConfigError("NLU_BACKEND must be 'embedded', 'rasa' or 'none'.")
    rasa_url = values.get("RASA_URL", "").strip() or None
    if backend == "rasa" and not rasa_url:
        raise ConfigError("NLU_BACKEND=rasa needs RASA_URL, e.g. http://127.0.0.1:5005.")
    secret, generated = _secret(values, var_dir, require_secret)
    return Settings(
        root=base,
        db_path=db_path,
        var_dir=var_dir,
        secret=secret,
        secret_generated=generated,
        session_ttl=timedelta(hours=ttl_hours),
        log_level=log_level,
        nlu_backend=backend,
        rasa_url=rasa_url,
        telegram_token=values.get("TELEGRAM_BOT_TOKEN", "").strip() or None,
        telegram_base_url=values.get("TELEGRAM_BASE_URL", "").strip() or None,
    )


def validate_telegram_token(token: str | None) -> str:
    """Fail fast, without echoing the token, when it is missing or not shaped like one."""
    if not token:
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and put its token in .env."
        )
    if not _TOKEN_PATTERN.match(token):
        raise ConfigError(
            "TELEGRAM_BOT_TOKEN does not look like a bot token (digits, a colon, then letters): "
            "copy it again from @BotFather."
        )
    return token
