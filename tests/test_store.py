"""The session store: pseudonymous keys, encryption at rest, deletion and retention."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot import store as store_module
from bot.session import Session
from bot.store import SQLiteSessionStore, session_cipher, user_key

SECRET = "store-secret-" + "y" * 40
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _store(path: Path, secret: str = SECRET) -> SQLiteSessionStore:
    return SQLiteSessionStore(path, session_cipher(secret))


def test_user_key_is_pseudonymous_stable_and_per_channel() -> None:
    key = user_key(SECRET, "telegram", 123456789)
    assert "123456789" not in key
    assert len(key) == 64
    assert key == user_key(SECRET, "telegram", "123456789")
    assert key != user_key(SECRET, "web", 123456789)
    assert key != user_key("another-secret-" + "z" * 40, "telegram", 123456789)


def test_a_canary_typed_by_the_user_is_not_in_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "hw.sqlite3"
    store = _store(path)
    canary = "CANARY-Jan-Jansen-0612345678"
    session = Session(answers={"situation": "image_abuse"}, letter={"name": canary})
    key = user_key(SECRET, "telegram", 424242)
    store.save(key, session, T0)
    assert store.load(key) == session
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert canary.encode() not in raw
    assert b"image_abuse" not in raw
    assert b"424242" not in raw


def test_delete_removes_the_session_and_message_ids(tmp_path: Path) -> None:
    store = _store(tmp_path / "hw.sqlite3")
    store.save("k1", Session(step="age"), T0)
    store.remember_message("k1", 17, T0)
    store.save("k2", Session(step="who"), T0)
    store.delete("k1")
    assert store.load("k1") is None
    assert store.count_rows("k1") == 0
    assert store.load("k2") is not None


def test_purge_removes_only_idle_sessions(tmp_path: Path) -> None:
    store = _store(tmp_path / "hw.sqlite3")
    store.save("old", Session(), T0 - timedelta(hours=25))
    store.remember_message("old", 1, T0 - timedelta(hours=25))
    store.save("fresh", Session(), T0 - timedelta(hours=1))
    removed = store.purge(T0 - timedelta(hours=24))
    assert removed == 1
    assert store.load("old") is None
    assert store.count_rows("old") == 0
    assert store.load("fresh") is not None


def test_message_ids_expire_after_48_hours(tmp_path: Path) -> None:
    store = _store(tmp_path / "hw.sqlite3")
    store.save("k", Session(), T0)
    store.remember_message("k", 1, T0 - timedelta(hours=49))
    store.remember_message("k", 2, T0 - timedelta(hours=47))
    store.remember_message("k", 3, T0)
    assert store.message_ids("k", T0) == [2, 3]


def test_a_session_written_with_another_secret_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "hw.sqlite3"
    _store(path).save("k", Session(step="age"), T0)
    assert _store(path, "a-different-secret-" + "q" * 40).load("k") is None


def test_a_damaged_row_starts_over_instead_of_crashing(tmp_path: Path) -> None:
    path = tmp_path / "hw.sqlite3"
    store = _store(path)
    store.save("k", Session(step="age"), T0)
    store.close()
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE sessions SET state = ? WHERE key = 'k'", [b"not encrypted"])
    assert _store(path).load("k") is None


def test_migrations_run_once_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "hw.sqlite3"
    first = _store(path)
    first.save("k", Session(step="who"), T0)
    version = first.schema_version
    first.close()
    again = _store(path)
    assert again.schema_version == version >= 2
    loaded = again.load("k")
    assert loaded is not None and loaded.step == "who"
    assert again.integrity_ok()


def test_a_migration_that_fails_halfway_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hw.sqlite3"
    first = _store(path)
    first.save("k", Session(step="who"), T0)
    version = first.schema_version
    first.close()
    broken = [
        "CREATE TABLE half_done (x INTEGER)",
        "ALTER TABLE sessions ADD COLUMN extra TEXT",
        "THIS IS NOT SQL",
    ]
    monkeypatch.setattr(store_module, "_MIGRATIONS", [*store_module._MIGRATIONS, broken])
    with pytest.raises(sqlite3.OperationalError):
        _store(path)
    monkeypatch.undo()
    again = _store(path)
    assert again.schema_version == version
    tables = {row[0] for row in again.db.execute("SELECT name FROM sqlite_master").fetchall()}
    assert "half_done" not in tables
    columns = {row[1] for row in again.db.execute("PRAGMA table_info(sessions)").fetchall()}
    assert "extra" not in columns
    loaded = again.load("k")
    assert loaded is not None and loaded.step == "who"


def test_no_table_has_a_raw_user_id_column(tmp_path: Path) -> None:
    store = _store(tmp_path / "hw.sqlite3")
    columns = {
        row[1]
        for table in ("sessions", "chat_messages")
        for row in store.db.execute(f"PRAGMA table_info({table})").fetchall()
    }
    assert not columns & {"user_id", "chat_id", "telegram_id", "username"}
