"""Privacy, checked by tests, not by promise.

Canary strings are typed the way a person would type their story, their name, e-mail
address and a web address for a letter. They must never turn up in logs (any level,
DEBUG included, in-process and from `python -m bot chat`), in exception reports, or in
the raw bytes of the database file and its -wal/-shm companions. /stop and /wis leave
no rows; idle sessions are purged; no table holds a Telegram user or chat id.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_telegram import TOKEN, FakeTelegram
from telegram_harness import run_with_fake, telegram_bot

from bot.app import Assistant
from bot.cli import main
from bot.events import Incoming, Outcome, Parse
from bot.session import Session
from bot.store import SQLiteSessionStore, session_cipher

ROOT = Path(__file__).resolve().parent.parent
SECRET = "privacy-test-secret-" + "p" * 40
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# What a person might type. Each has a distinctive token to search for.
FREE = "Kanarie7f3a: hij heeft mijn naaktfoto op insta gezet en Zoë-kanarie-ü8 weet het"
NAME = "Canarius Vogelzang9b1"
EMAIL = "canary-51c2@example.org"
URL = "https://example.com/canary-path-91b2?u=geheim-4d7e"
CRISIS = "ik wil dood, kanarie-crisis-33d1"
CANARIES = (
    "Kanarie7f3a",
    "Zoë-kanarie-ü8",
    "Vogelzang9b1",
    "canary-51c2",
    "canary-path-91b2",
    "geheim-4d7e",
    "kanarie-crisis-33d1",
)
# A doxing case for an adult: the letter asks for web addresses, a name and an e-mail.
TO_LETTER = ["nl", "yes", "me", "adult", "doxing", "yes", "x", "letter", "x"]


def _leaks(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


def _raw_database(folder: Path, name: str = "hw.sqlite3") -> bytes:
    """The database file and its -wal and -shm companions, as bytes on disk."""
    files = sorted(folder.glob(f"{name}*"))
    assert files, "no database file"
    return b"".join(path.read_bytes() for path in files)


def _in_bytes(raw: bytes, text: str) -> bool:
    return any(text.encode(codec) in raw for codec in ("utf-8", "utf-16-le", "utf-16-be"))


def _press(outcome: Outcome, option: str) -> Incoming:
    for reply in outcome.replies:
        for button in reply.buttons:
            if button.data.endswith(f":{option}"):
                return Incoming("button", button.data)
    raise AssertionError(f"no button {option}")


def _everything_logged(records: list[logging.LogRecord]) -> str:
    """Every record as any handler could render it: message, arguments, traceback, stack."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    parts = []
    for record in records:
        parts.append(formatter.format(record))
        parts.append(repr(record.args))
        parts.append(repr(record.msg))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1].args))
    return "\n".join(parts)


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture every logger at DEBUG, the root and our own hierarchy included."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="hulpwijzer")
    yield caplog


def _tell_the_whole_story(assistant: Assistant, key: str) -> Outcome:
    """Free text at a question, then the letter with web address, name and e-mail, then
    more free text and a crisis message at the end."""
    outcome = assistant.handle(key, Incoming("command", "/start"))
    assistant.handle(key, Incoming("text", FREE))  # at the language question: not an answer
    outcome = assistant.handle(key, Incoming("command", "/help"))
    for option in TO_LETTER:
        outcome = assistant.handle(key, _press(outcome, option))
    assistant.handle(key, Incoming("text", URL))
    assistant.handle(key, Incoming("text", NAME))
    outcome = assistant.handle(key, Incoming("text", EMAIL))
    letter = "\n".join(reply.text for reply in outcome.replies)
    assert NAME in letter and EMAIL in letter and URL in letter  # the person gets their letter
    assistant.handle(key, Incoming("text", FREE))
    return assistant.handle(key, Incoming("text", CRISIS))


# ---------------------------------------------------------------------- logs
def test_canaries_never_reach_the_logs_at_debug(
    make_assistant: Callable[..., Assistant],
    classifier: object,
    debug_logs: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    assistant = make_assistant(classifier)
    key = assistant.key_for("test", "privacy-logs")
    outcome = _tell_the_whole_story(assistant, key)
    assert any("113" in reply.text for reply in outcome.replies)  # the crisis was answered
    logged = _everything_logged(debug_logs.records)
    assert "event kind=" in logged  # the capture works: events are logged, by kind
    assert key not in logged  # only a prefix of the pseudonymous key
    assert not _leaks(logged)
    raw = _raw_database(tmp_path)
    assert not [c for c in CANARIES if _in_bytes(raw, c)]


def test_canaries_never_reach_stderr_of_the_terminal_chat_at_debug(
    make_assistant: Callable[..., Assistant], tmp_path: Path
) -> None:
    """The real program, as an operator runs it, with the real classifier, at DEBUG."""
    # Work out which numbers to type for the buttons, with the same engine in-process.
    assistant = make_assistant()
    key = assistant.key_for("test", "plan-the-keys")
    outcome = assistant.handle(key, Incoming("command", "/start"))
    lines = [FREE, "/help"]
    for option in TO_LETTER:
        buttons = outcome.replies[-1].buttons
        number = next(n for n, b in enumerate(buttons, 1) if b.data.endswith(f":{option}"))
        lines.append(str(number))
        outcome = assistant.handle(key, Incoming("button", buttons[number - 1].data))
    lines += [URL, NAME, EMAIL, FREE, CRISIS, "/privacy"]
    database = tmp_path / "chat" / "hw.sqlite3"
    env = {
        **os.environ,
        "HULPWIJZER_SECRET": SECRET,
        "HULPWIJZER_VAR": str(tmp_path / "var"),
        "HULPWIJZER_LOG_LEVEL": "DEBUG",
        "NLU_BACKEND": "embedded",
        "PYTHONIOENCODING": "utf-8",
    }
    result = subprocess.run(
        [sys.executable, "-m", "bot", "chat", "--db", str(database)],
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=ROOT,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert NAME in result.stdout and EMAIL in result.stdout  # the letter was drafted
    assert " DEBUG " in result.stderr or " INFO " in result.stderr  # logging was on
    assert "event kind=text" in result.stderr
    assert not _leaks(result.stderr)
    raw = _raw_database(database.parent)
    assert not [c for c in CANARIES if _in_bytes(raw, c)]


# ---------------------------------------------------------------------- exception reports
class LeakyError(RuntimeError):
    """An exception from a library that puts the input in its message (many do)."""


def test_a_classifier_that_fails_with_the_text_in_its_message_leaks_nothing(
    make_assistant: Callable[..., Assistant], debug_logs: pytest.LogCaptureFixture
) -> None:
    def broken_classifier(text: str) -> Parse:
        raise LeakyError(f"could not classify {text!r}")

    assistant = make_assistant(broken_classifier)
    key = assistant.key_for("test", "broken-nlu")
    assistant.handle(key, Incoming("command", "/start"))
    outcome = assistant.handle(key, Incoming("text", FREE))
    assert outcome.replies  # the conversation goes on without the classifier
    logged = _everything_logged(debug_logs.records)
    assert "classifier_failed kind=LeakyError" in logged
    assert not _leaks(logged)


class LeakyStore(SQLiteSessionStore):
    """A store whose writes fail with the state in the message, like a driver error would."""

    def save(self, key: str, session: Session, now: datetime) -> None:
        if session.letter or session.step != "welcome":
            raise LeakyError(f"cannot save {session.to_json()} for {FREE}")
        super().save(key, session, now)


async def _answer(tg: FakeTelegram, chat: int, do: Callable[[], object]) -> None:
    before = len(tg.sent(chat))
    do()
    await tg.wait_for(lambda: len(tg.sent(chat)) > before, timeout=15, what="an answer")
    await tg.wait_idle(quiet=0.05)


def test_a_store_failing_with_the_state_in_its_message_leaks_nothing_on_telegram(
    tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    person = 6029384756

    async def scenario(tg: FakeTelegram) -> None:
        # protect=True: protect_logs(), as `hulpwijzer telegram` does once logging is set up.
        async with telegram_bot(
            tg,
            tmp_path,
            SECRET,
            max_rate=0,
            store=LeakyStore,
            protect=True,
        ):
            await _answer(tg, person, lambda: tg.send_text(person, "/start"))
            await _answer(tg, person, lambda: tg.send_text(person, FREE))
            await _answer(tg, person, lambda: tg.press_option(person, "nl"))
        texts = "\n".join(tg.sent_texts(person))
        assert not _leaks(texts)  # the person is told something went wrong, not the details

    run_with_fake(scenario)
    logged = _everything_logged(debug_logs.records)
    assert "telegram_error kind=LeakyError" in logged
    assert not _leaks(logged)
    assert str(person) not in logged


def test_canaries_through_telegram_at_debug_reach_neither_logs_nor_database(
    tmp_path: Path, debug_logs: pytest.LogCaptureFixture
) -> None:
    """PTB and httpx log whole updates at DEBUG; protect_logs keeps them out."""
    person = 7730461829

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(
            tg,
            tmp_path,
            SECRET,
            max_rate=0,
            protect=True,
        ) as assistant:
            await _answer(tg, person, lambda: tg.send_text(person, "/start"))
            await _answer(tg, person, lambda: tg.send_text(person, FREE))
            for option in TO_LETTER:
                await _answer(tg, person, lambda o=option: tg.press_option(person, o))  # type: ignore[misc]
            for text in (URL, NAME, EMAIL):
                await _answer(tg, person, lambda t=text: tg.send_text(person, t))
            assert any(NAME in t for t in tg.sent_texts(person))  # the letter arrived
            await _answer(tg, person, lambda: tg.send_text(person, CRISIS))
            key = assistant.key_for("telegram", person)
            assert assistant.store.count_rows(key) > 1
        raw = _raw_database(tmp_path)
        assert not [c for c in CANARIES if _in_bytes(raw, c)]
        _no_raw_ids(tmp_path / "hw.sqlite3", [person])

    run_with_fake(scenario)
    logged = _everything_logged(debug_logs.records)
    assert "telegram" in logged  # PTB's own DEBUG records were captured
    assert not _leaks(logged)
    assert str(person) not in logged
    assert TOKEN not in logged and TOKEN.split(":")[1] not in logged


# ---------------------------------------------------------------------- no raw ids
def _no_raw_ids(database: Path, ids: list[int]) -> None:
    """No table, no column, and no byte sequence of the file holds the ids: not as text,
    not as SQLite's big-endian integers of any width."""
    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert tables
        for table in tables:
            for row in db.execute(f"SELECT * FROM {table}"):
                for value in row:
                    for person in ids:
                        assert value != person, f"{table} holds the raw id {person}"
                        if isinstance(value, str | bytes):
                            text = value if isinstance(value, str) else value.hex()
                            assert str(person) not in text, f"{table} holds {person}"
    raw = _raw_database(database.parent, database.name)
    for person in ids:
        assert str(person).encode() not in raw
        for width in (6, 8):
            assert person.to_bytes(width, "big") not in raw, f"{person} as a {width}-byte integer"


def test_no_table_holds_a_telegram_user_or_chat_id_after_many_conversations(
    tmp_path: Path,
) -> None:
    people = [7730461829, 5_000_000_001, 281_474_976_710_000, 123_456_789]

    async def scenario(tg: FakeTelegram) -> None:
        async with telegram_bot(tg, tmp_path, SECRET, max_rate=0, protect=True):
            for person in people:
                await _answer(tg, person, lambda p=person: tg.send_text(p, "/start"))  # type: ignore[misc]
                await _answer(tg, person, lambda p=person: tg.press_option(p, "nl"))  # type: ignore[misc]
                await _answer(tg, person, lambda p=person: tg.send_media(p, "photo"))  # type: ignore[misc]

    run_with_fake(scenario)
    _no_raw_ids(tmp_path / "hw.sqlite3", people)


# ---------------------------------------------------------------------- erasing
@pytest.mark.parametrize("command", ["/stop", "/stoppen", "/wis", "/wipe"])
def test_stop_and_wis_leave_zero_rows_for_the_person(
    make_assistant: Callable[..., Assistant], command: str
) -> None:
    assistant = make_assistant()
    key = assistant.key_for("test", "erase-me")
    other = assistant.key_for("test", "someone-else")
    for person in (key, other):
        outcome = assistant.handle(person, Incoming("command", "/start"))
        for option in TO_LETTER[:5]:
            outcome = assistant.handle(person, _press(outcome, option))
        for message_id in range(1, 6):
            assistant.store.remember_message(person, message_id, NOW)
    assert assistant.store.count_rows(key) == 6
    outcome = assistant.handle(key, Incoming("command", command))
    assert outcome.erase
    assert assistant.store.count_rows(key) == 0
    assert assistant.store.load(key) is None
    assert assistant.store.count_rows(other) == 6  # nobody else's data went with it


def test_the_stop_button_and_the_stop_intent_erase_too(
    make_assistant: Callable[..., Assistant],
) -> None:
    def says_stop(text: str) -> Parse:
        return Parse("stop", 0.99)

    assistant = make_assistant(says_stop)
    key = assistant.key_for("test", "stop-intent")
    outcome = assistant.handle(key, Incoming("command", "/start"))
    for option in ("nl", "yes"):
        outcome = assistant.handle(key, _press(outcome, option))
    outcome = assistant.handle(key, Incoming("text", "laat maar, ik wil hier weg"))
    assert assistant.store.count_rows(key) == 1
    confirm = [b.data for b in outcome.replies[-1].buttons]
    erase = next(d for d in confirm if d.endswith(":stop_confirm:stop"))
    outcome = assistant.handle(key, Incoming("button", erase))
    assert outcome.erase and assistant.store.count_rows(key) == 0


# ---------------------------------------------------------------------- retention
def test_sessions_idle_longer_than_the_ttl_are_purged(engine: Any, tmp_path: Path) -> None:
    clock = [NOW]
    store = SQLiteSessionStore(tmp_path / "hw.sqlite3", session_cipher(SECRET))
    assistant = Assistant(engine, store, SECRET, None, lambda: clock[0], ttl=timedelta(hours=24))
    idle = assistant.key_for("test", "idle")
    active = assistant.key_for("test", "active")
    assistant.handle(idle, Incoming("command", "/start", NOW))
    store.remember_message(idle, 11, NOW)
    assistant.handle(active, Incoming("command", "/start", NOW))
    clock[0] = NOW + timedelta(hours=23)
    assistant.handle(active, Incoming("command", "/help", clock[0]))
    assert assistant.purge() == 0  # 23 hours idle: kept
    clock[0] = NOW + timedelta(hours=24, minutes=1)
    assert assistant.purge() == 1
    assert store.count_rows(idle) == 0  # the message ids went with it
    assert store.load(active) is not None


def test_hulpwijzer_purge_deletes_idle_sessions_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "hw.sqlite3"
    store = SQLiteSessionStore(database, session_cipher(SECRET))
    now = datetime.now(UTC)
    store.save("old", Session(step="age"), now - timedelta(hours=3))
    store.remember_message("old", 5, now - timedelta(hours=3))
    store.save("new", Session(step="who"), now - timedelta(minutes=30))
    store.close()
    monkeypatch.setenv("HULPWIJZER_SECRET", SECRET)
    monkeypatch.setenv("HULPWIJZER_VAR", str(tmp_path / "var"))
    monkeypatch.setenv("HULPWIJZER_SESSION_TTL_HOURS", "2")
    monkeypatch.setenv("NLU_BACKEND", "none")
    assert main(["purge", "--db", str(database)]) == 0
    assert "Purged 1 idle session(s)" in capsys.readouterr().out
    after = SQLiteSessionStore(database, session_cipher(SECRET))
    assert after.count_rows("old") == 0 and after.load("new") is not None
    assert after.integrity_ok()


def test_erased_data_is_overwritten_in_the_file_not_only_unlinked(
    make_assistant: Callable[..., Assistant], tmp_path: Path
) -> None:
    """secure_delete: after /stop the encrypted state is zeroed, so even someone with the
    key and an old copy of the secret cannot undelete it from free pages."""
    assistant = make_assistant()
    key = assistant.key_for("test", "secure-delete")
    outcome = assistant.handle(key, Incoming("command", "/start"))
    for option in TO_LETTER:
        outcome = assistant.handle(key, _press(outcome, option))
    assistant.handle(key, Incoming("text", URL))
    assistant.handle(key, Incoming("text", NAME))  # the name is in the session now
    store = assistant.store
    assert isinstance(store, SQLiteSessionStore)
    blob = bytes(store.db.execute("SELECT state FROM sessions WHERE key = ?", [key]).fetchone()[0])
    assistant.handle(key, Incoming("command", "/stop"))
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert blob[:40] not in _raw_database(tmp_path)
