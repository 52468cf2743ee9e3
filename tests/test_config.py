"""Configuration fails fast with one sentence; secrets never show in repr or errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bot.config import load_settings, validate_telegram_token
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_terminal_generates_a_private_secret_once(tmp_path: Path) -> None:
    env = {"HULPWIJZER_VAR": str(tmp_path)}
    first = load_settings(env, root=ROOT)
    assert first.secret_generated
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = load_settings(env, root=ROOT)
    assert not second.secret_generated
    assert second.secret == first.secret


def test_server_mode_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HULPWIJZER_SECRET"):
        load_settings({"HULPWIJZER_VAR": str(tmp_path)}, require_secret=True, root=ROOT)


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shorter"):
        load_settings({"HULPWIJZER_SECRET": "short"}, root=ROOT)


def test_the_secret_is_not_in_the_repr() -> None:
    secret = "s" * 40
    settings = load_settings({"HULPWIJZER_SECRET": secret}, root=ROOT)
    assert secret not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HULPWIJZER_SESSION_TTL_HOURS", "soon"),
        ("HULPWIJZER_SESSION_TTL_HOURS", "-1"),
        ("HULPWIJZER_LOG_LEVEL", "LOUD"),
        ("NLU_BACKEND", "gpt"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({"HULPWIJZER_SECRET": "s" * 40, name: value}, root=ROOT)


def test_rasa_backend_needs_a_url() -> None:
    with pytest.raises(ConfigError, match="RASA_URL"):
        load_settings({"HULPWIJZER_SECRET": "s" * 40, "NLU_BACKEND": "rasa"}, root=ROOT)


def test_telegram_token_missing_or_malformed_is_one_sentence_without_the_token() -> None:
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN is not set"):
        validate_telegram_token(None)
    bad = "not-a-token-secretvalue"
    with pytest.raises(ConfigError) as caught:
        validate_telegram_token(bad)
    assert bad not in str(caught.value)
    good = "123456789:" + "A" * 35
    assert validate_telegram_token(good) == good
