"""The real Telegram bot (PTB, our handlers, the Assistant, a real SQLite file) against the
fake Bot API server of tests/fake_telegram.py, set up once for every test module.

`telegram_bot` starts the application the way `run_polling`/`run_webhook` do (initialize,
post_init, updater, start) and stops it gracefully (updater, stop, post_stop, shutdown);
its keyword options cover what the test modules need to differ in."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fake_telegram import TOKEN, FakeTelegram

from bot.app import Assistant, build_assistant
from bot.channels.telegram import DEFAULT_MAX_RATE, PURGE_EVERY, build_application, protect_logs
from bot.config import load_settings
from bot.store import SQLiteSessionStore, session_cipher

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_PATH = "tg-hook"
WEBHOOK_URL = f"https://bot.example.invalid/{WEBHOOK_PATH}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bot_env(tmp: Path, tg: FakeTelegram | None, secret: str, **extra: str) -> dict[str, str]:
    """The environment of a bot in `tmp` talking to `tg` (no server: an empty base URL);
    `extra` adds variables or overrides these."""
    return {
        "HULPWIJZER_SECRET": secret,
        "HULPWIJZER_DB": str(tmp / "hw.sqlite3"),
        "HULPWIJZER_VAR": str(tmp / "var"),
        "NLU_BACKEND": "none",
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_BASE_URL": tg.base_url if tg else "",
        **extra,
    }


@asynccontextmanager
async def telegram_bot(
    tg: FakeTelegram,
    tmp: Path,
    secret: str,
    *,
    root: Path = ROOT,
    max_rate: float = DEFAULT_MAX_RATE,
    purge_every: float = PURGE_EVERY,
    store: type[SQLiteSessionStore] | None = None,
    protect: bool = False,
    webhook_port: int | None = None,
    webhook_secret: str | None = None,
    post_init: bool = True,
    post_stop: bool = True,
) -> AsyncIterator[Assistant]:
    """Start the real application against `tg` and yield its Assistant.

    Polling by default; with `webhook_port` PTB's webhook server listens on 127.0.0.1 at
    that port under /tg-hook with `webhook_secret`. `store` replaces the Assistant's store
    with another class on the same file; `protect` calls protect_logs() as the command
    does once logging is configured. `post_init`/`post_stop` False skip those hooks."""
    if (webhook_port is None) != (webhook_secret is None):
        raise ValueError("a webhook needs both a port and a secret")
    settings = load_settings(bot_env(tmp, tg, secret), root=root)
    assistant = build_assistant(settings, with_nlu=False)
    if store is not None:
        assistant.store.close()  # type: ignore[attr-defined]
        assistant.store = store(settings.db_path, session_cipher(secret))
    if protect:
        protect_logs()
    application = build_application(settings, assistant, max_rate=max_rate, purge_every=purge_every)
    await application.initialize()
    assert application.updater is not None
    if post_init:
        assert application.post_init is not None
        await application.post_init(application)
    if webhook_port is None:
        await application.updater.start_polling(poll_interval=0.0, timeout=1)
    else:
        await application.updater.start_webhook(
            listen="127.0.0.1",
            port=webhook_port,
            url_path=WEBHOOK_PATH,
            webhook_url=WEBHOOK_URL,
            secret_token=webhook_secret,
        )
    await application.start()
    try:
        yield assistant
    finally:
        await application.updater.stop()
        await application.stop()
        if post_stop:
            assert application.post_stop is not None
            await application.post_stop(application)
        await application.shutdown()


def run_with_fake(
    scenario: Callable[[FakeTelegram], Awaitable[object]], long_poll_cap: float = 0.5
) -> None:
    """Run `scenario` in a fresh event loop with a fake Bot API server started for it."""

    async def wrapper() -> None:
        async with FakeTelegram(long_poll_cap=long_poll_cap) as tg:
            await scenario(tg)

    asyncio.run(wrapper())
