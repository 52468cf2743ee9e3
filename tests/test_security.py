"""Security: the webhook lets in only requests with the right secret (compared in
constant time), server modes refuse to start without a secret key, no secret turns up in
a log or an error message (start-up crashes included), and the dependency audit in
.ci/run is honest about whether it ran."""

from __future__ import annotations

import asyncio
import hmac
import importlib.util
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fake_telegram import TOKEN, FakeTelegram
from telegram.ext._utils import webhookhandler as ptb_webhook
from telegram_harness import bot_env, free_port, run_with_fake, telegram_bot

from bot import config
from bot.channels import telegram as telegram_channel
from bot.channels.telegram import (
    ConstantTimeSecretHandler,
    webhook_settings,
)
from bot.cli import main
from bot.config import load_settings, validate_telegram_token
from bot.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SECRET = "security-test-secret-" + "k" * 40
HOOK_SECRET = "hook-secret-" + "w" * 44
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


# ---------------------------------------------------------------------- the webhook
def test_the_webhook_compares_the_secret_in_constant_time_and_rejects_wrong_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real_compare(given, expected)

    monkeypatch.setattr(telegram_channel.hmac, "compare_digest", spy)
    port = free_port()
    person = 4815162342
    wrong_same_length = HOOK_SECRET[:-1] + "x"
    attempts: list[tuple[dict[str, str], int]] = [
        ({}, 403),
        ({SECRET_HEADER: ""}, 403),
        ({SECRET_HEADER: "guess"}, 403),
        ({SECRET_HEADER: wrong_same_length}, 403),
        ({SECRET_HEADER: HOOK_SECRET + "x"}, 403),
        ({SECRET_HEADER: HOOK_SECRET.upper()}, 403),
        ({SECRET_HEADER: "é".encode("latin-1") * 10}, 403),  # type: ignore[dict-item]
    ]

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(
            tg,
            tmp_path,
            SECRET,
            max_rate=0,
            protect=True,  # as `hulpwijzer telegram --webhook` does
            webhook_port=port,
            webhook_secret=HOOK_SECRET,
            post_init=False,
            post_stop=False,
        ) as assistant:
            # PTB's server now builds its handler from our class.
            assert ptb_webhook.TelegramHandler is ConstantTimeSecretHandler
            url = f"http://127.0.0.1:{port}/tg-hook"
            async with httpx.AsyncClient() as client:
                for headers, status in attempts:
                    update = tg.text_update(person, "/start")
                    answer = await client.post(url, json=update, headers=headers)
                    assert answer.status_code == status, headers
                await asyncio.sleep(0.3)
                assert not tg.sent(person), "a request without the right secret got through"
                key = assistant.key_for("telegram", person)
                assert assistant.store.count_rows(key) == 0
                update = tg.text_update(person, "/start")
                answer = await client.post(url, json=update, headers={SECRET_HEADER: HOOK_SECRET})
                assert answer.status_code == 200
                await tg.wait_for(lambda: bool(tg.sent(person)), timeout=10, what="a reply")

    run_with_fake(scenario)
    # Every request with a secret header went through hmac.compare_digest.
    assert len(compared) >= len(attempts) - 1
    assert all(expected == HOOK_SECRET.encode() for _, expected in compared)
    logged = caplog.text
    assert wrong_same_length not in logged and "guess" not in logged
    assert HOOK_SECRET not in logged


# ---------------------------------------------------------------------- server modes need a key
@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No secrets from the developer's environment or .env leak into these tests."""
    for name in list(os.environ):
        if name.startswith(("HULPWIJZER_", "TELEGRAM_", "NLU_", "RASA_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(config, "dotenv_values", lambda path: {})
    monkeypatch.setenv("HULPWIJZER_VAR", str(tmp_path / "var"))
    monkeypatch.setenv("NLU_BACKEND", "none")
    return tmp_path


@pytest.mark.parametrize("command", [["telegram"], ["telegram", "--webhook"], ["web"]])
def test_server_modes_refuse_to_start_without_a_secret_key(
    clean_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "HULPWIJZER_SECRET is not set" in error
    assert len(error.strip().splitlines()) == 1  # one sentence, no traceback
    # The terminal chat may make itself a key file; a server never does.
    assert not (clean_environment / "var" / "secret.key").exists()


@pytest.mark.parametrize("command", [["telegram"], ["web"]])
def test_a_short_secret_key_is_refused_without_echoing_it(
    clean_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    short = "tooShortSecret-7d1c"
    monkeypatch.setenv("HULPWIJZER_SECRET", short)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    assert main(command) == 2
    error = capsys.readouterr().err
    assert "HULPWIJZER_SECRET is shorter than" in error
    assert short not in error and "7d1c" not in error


# ---------------------------------------------------------------------- secrets in messages
MALFORMED_TOKENS = [
    "123456789:shortSecretPart9",  # too short after the colon
    "notdigits:AAHsecretTokenPartThatIsLongEnough12345",
    "123456789-AAHsecretTokenPartThatIsLongEnough12345",
    " 123456789:AAHsecret token with spaces inside 12345",
]


@pytest.mark.parametrize("token", MALFORMED_TOKENS)
def test_a_malformed_bot_token_is_refused_without_echoing_it(
    clean_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    token: str,
) -> None:
    monkeypatch.setenv("HULPWIJZER_SECRET", SECRET)
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", token)
    assert main(["telegram"]) == 2
    error = capsys.readouterr().err
    assert "TELEGRAM_BOT_TOKEN" in error
    secret_part = token.strip().split(":")[-1].split("-")[-1]
    assert secret_part not in error and SECRET not in error
    with pytest.raises(ConfigError) as raised:
        validate_telegram_token(token)
    assert secret_part not in str(raised.value) and secret_part not in repr(raised.value)


@pytest.mark.parametrize(
    "value", ["short-hook-secret", "has spaces in it but is long enough 1234567890", "é" * 40]
)
def test_a_bad_webhook_secret_is_refused_without_echoing_it(value: str) -> None:
    env = {"TELEGRAM_WEBHOOK_URL": "https://bot.example.nl/tg", "TELEGRAM_WEBHOOK_SECRET": value}
    with pytest.raises(ConfigError) as raised:
        webhook_settings(env)
    assert value not in str(raised.value)


def test_settings_never_show_their_secrets(tmp_path: Path) -> None:
    settings = load_settings(bot_env(tmp_path, None, SECRET), root=ROOT)
    hook = webhook_settings(
        {
            "TELEGRAM_WEBHOOK_URL": "https://bot.example.nl/tg",
            "TELEGRAM_WEBHOOK_SECRET": HOOK_SECRET,
        }
    )
    for shown in (repr(settings), str(settings), f"{settings}", repr(hook), str(hook)):
        assert SECRET not in shown and TOKEN not in shown and TOKEN.split(":")[1] not in shown
        assert HOOK_SECRET not in shown


def _start_bot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "telegram", "--no-nlu", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HULPWIJZER_LOG_LEVEL": "DEBUG", **env},
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def _assert_no_secrets(text: str) -> None:
    for secret in (SECRET, TOKEN, TOKEN.split(":")[1], HOOK_SECRET):
        assert secret not in text


def test_start_up_crashes_at_debug_show_no_secrets(tmp_path: Path) -> None:
    """The Bot API refuses the token; the Bot API can't be reached; the database can't be
    opened: each stops start-up with a sentence, and DEBUG logs carry no secret."""

    async def refused() -> subprocess.CompletedProcess[str]:
        async with FakeTelegram(token="987654321:AAHanotherTokenThatIsNotOurs_abcdefg") as tg:
            return await asyncio.to_thread(_start_bot, bot_env(tmp_path / "a", tg, SECRET))

    result = asyncio.run(refused())
    assert result.returncode == 2
    assert "does not accept TELEGRAM_BOT_TOKEN" in result.stderr
    _assert_no_secrets(result.stderr + result.stdout)

    unreachable = bot_env(
        tmp_path / "b", None, SECRET, TELEGRAM_BASE_URL=f"http://127.0.0.1:{free_port()}/bot"
    )
    result = _start_bot(unreachable)
    assert result.returncode != 0
    assert "DEBUG" in result.stderr  # logging was on
    _assert_no_secrets(result.stderr + result.stdout)

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "hw.sqlite3").mkdir()  # a folder where the database file should be
    result = _start_bot(
        bot_env(tmp_path / "c", None, SECRET, TELEGRAM_BASE_URL="http://127.0.0.1:9/bot")
    )
    assert result.returncode != 0
    _assert_no_secrets(result.stderr + result.stdout)

    hook = bot_env(
        tmp_path / "d",
        None,
        SECRET,
        TELEGRAM_WEBHOOK_URL="https://bot.example.nl/tg",
        TELEGRAM_WEBHOOK_SECRET="x",
    )
    result = _start_bot(hook, "--webhook")
    assert result.returncode == 2 and "TELEGRAM_WEBHOOK_SECRET" in result.stderr
    _assert_no_secrets(result.stderr + result.stdout)


def test_no_secret_in_logs_while_telegram_fails_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """500s, dropped connections and slow answers produce error logs; none shows a secret
    (the token is part of every Bot API URL)."""
    caplog.set_level(logging.DEBUG)
    person = 3141592653

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(
            tg, tmp_path, SECRET, max_rate=0, protect=True, post_init=False, post_stop=False
        ):
            tg.fail("500", ["sendMessage"], times=2)
            tg.fail("drop", ["sendMessage"], times=2)
            tg.send_text(person, "/start")
            await tg.wait_for(lambda: bool(tg.sent(person)), timeout=30, what="a reply")
            tg.fail("400", ["sendMessage"], times=1)
            tg.send_text(person, "/help")
            await tg.wait_idle(quiet=0.3)

    run_with_fake(scenario)
    logged = caplog.text + "\n".join(repr(r.args) for r in caplog.records)
    assert "telegram_retry" in logged  # the faults were met and logged
    _assert_no_secrets(logged)


# ---------------------------------------------------------------------- the dependency audit
def _audit_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_audit", ROOT / ".ci" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ci_audit"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


AUDIT = _audit_module()
# Shapes as pip-audit 2.x prints them with `-f json`.
NOT_FOUND = {
    "dependencies": [
        {
            "name": "aiohttp",
            "skip_reason": "Dependency not found on PyPI and could not be audited: "
            "aiohttp (3.14.5)",
        },
        {
            "name": "jinja2",
            "skip_reason": "Dependency not found on PyPI and could not be audited: jinja2 (3.1.6)",
        },
    ],
    "fixes": [],
}
CLEAN = {
    "dependencies": [
        {"name": "jinja2", "version": "3.1.6", "vulns": []},
        {"name": "pyyaml", "version": "6.0.3", "vulns": []},
        {"name": "hulpwijzer-local", "skip_reason": "Dependency not found on PyPI"},
    ],
    "fixes": [],
}
VULNERABLE = {
    "dependencies": [
        {"name": "pyyaml", "version": "6.0.3", "vulns": []},
        {
            "name": "jinja2",
            "version": "3.1.2",
            "vulns": [
                {
                    "id": "GHSA-h5c8-rqwp-cp95",
                    "fix_versions": ["3.1.3"],
                    "aliases": ["CVE-2024-22195"],
                    "description": "xmlattr filter allows keys with spaces",
                }
            ],
        },
    ],
    "fixes": [],
}


def test_the_audit_fails_on_a_known_vulnerability() -> None:
    result = AUDIT.verdict(VULNERABLE)
    assert result.exit_code == 1
    text = "\n".join(result.lines)
    assert "jinja2 3.1.2: GHSA-h5c8-rqwp-cp95 (CVE-2024-22195); fixed in 3.1.3" in text


def test_the_audit_warns_in_one_line_when_nothing_could_be_audited() -> None:
    result = AUDIT.verdict(NOT_FOUND)
    assert result.exit_code == 0 and result.audited == 0
    assert len(result.lines) == 1 and result.lines[0].startswith("WARNING:")
    assert "could not audit any of 2 dependencies" in result.lines[0]
    for nothing in ({}, {"dependencies": []}, [], None, {"dependencies": "x"}):
        assert AUDIT.verdict(nothing).exit_code == 0
        assert AUDIT.verdict(nothing).lines[0].startswith("WARNING:")


def test_the_audit_passes_when_everything_it_could_audit_is_clean() -> None:
    result = AUDIT.verdict(CLEAN)
    assert result.exit_code == 0 and result.audited == 2
    assert result.lines == [
        "pip-audit (pypi): 2 audited, 1 skipped (not on the index), no known vulnerabilities"
    ]


def _fake_runs(monkeypatch: pytest.MonkeyPatch, answers: dict[str, tuple[Any, str]]) -> list[str]:
    asked: list[str] = []

    def run(service: str, extra: Sequence[str] = ()) -> tuple[Any, str]:
        asked.append(service)
        return answers[service]

    monkeypatch.setattr(AUDIT, "run_pip_audit", run)
    return asked


def test_the_audit_asks_osv_when_pypi_audits_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = _fake_runs(monkeypatch, {"pypi": (NOT_FOUND, ""), "osv": (VULNERABLE, "")})
    assert AUDIT.main() == 1
    assert asked == ["pypi", "osv"]
    assert "GHSA-h5c8-rqwp-cp95" in capsys.readouterr().out


def test_the_audit_warns_once_when_no_service_answers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = "requests.exceptions.ConnectionError: Failed to resolve 'api.osv.dev'"
    _fake_runs(monkeypatch, {"pypi": (NOT_FOUND, ""), "osv": (None, unreachable)})
    assert AUDIT.main() == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("WARNING: no dependency was checked")
    assert "api.osv.dev" in out[0] and "not found on PyPI" in out[0]


def test_the_audit_stops_at_pypi_when_it_works(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked = _fake_runs(monkeypatch, {"pypi": (VULNERABLE, ""), "osv": (CLEAN, "")})
    assert AUDIT.main() == 1 and asked == ["pypi"]
    asked = _fake_runs(monkeypatch, {"pypi": (CLEAN, ""), "osv": (VULNERABLE, "")})
    assert AUDIT.main() == 0 and asked == ["pypi"]
    capsys.readouterr()


class FakeOsv(ThreadingHTTPServer):
    """OSV's query API on 127.0.0.1: one known vulnerability in the installed PyYAML (a
    pinned dependency), nothing for any other package."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        super().__init__(("127.0.0.1", 0), _OsvHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/query"


class _OsvHandler(BaseHTTPRequestHandler):
    server: FakeOsv

    def do_POST(self) -> None:  # the name http.server calls
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        name = query["package"]["name"]
        self.server.asked.append(name)
        answer: dict[str, Any] = {}
        if name == "pyyaml":
            answer = {
                "vulns": [
                    {
                        "id": "GHSA-test-0000-0000",
                        "aliases": ["CVE-2099-0001"],
                        "summary": "made up for the test",
                        "affected": [
                            {
                                "package": {"name": "pyyaml", "ecosystem": "PyPI"},
                                "ranges": [
                                    {
                                        "type": "ECOSYSTEM",
                                        "events": [{"introduced": "0"}, {"fixed": "99.0"}],
                                    }
                                ],
                            }
                        ],
                    }
                ]
            }
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_real_pip_audit_run_fails_the_gate_on_a_vulnerable_pinned_dependency(
    tmp_path: Path,
) -> None:
    """End to end, with the real pip-audit over the installed dependencies: only the
    vulnerability database is ours (on 127.0.0.1), since none is reachable from CI here."""
    server = FakeOsv()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        audit = [sys.executable, str(ROOT / ".ci" / "audit.py"), "--osv-url", server.url]
        done = subprocess.run(
            [*audit, "--cache-dir", str(tmp_path / "cache")],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pyyaml 6." in done.stdout and "fixed in 99.0" in done.stdout
    assert "GHSA-test-0000-0000" in done.stdout and "CVE-2099-0001" in done.stdout
    assert {"pyyaml", "aiohttp", "python-telegram-bot"} <= set(server.asked)


def test_ci_runs_the_honest_audit() -> None:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python .ci/audit.py" in script
    assert "\npip-audit " not in script  # the bare call that audits nothing and passes
