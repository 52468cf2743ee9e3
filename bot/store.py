"""Session storage: pseudonymous keys, encrypted state, retention purge.

The store never sees a channel user id: callers pass `user_key(...)`, an HMAC of it.
State is encrypted with a key derived from the same secret, so the database file alone
reveals nothing a person typed.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import sqlite_utils
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bot.session import Session

# Telegram lets a bot delete messages for 48 hours; ids older than that are useless.
MESSAGE_ID_LIFETIME = timedelta(hours=48)

_MIGRATIONS: list[list[str]] = [
    [
        "CREATE TABLE IF NOT EXISTS sessions ("
        " key TEXT PRIMARY KEY, state BLOB NOT NULL, updated_at REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS sessions_updated ON sessions(updated_at)",
    ],
    [
        "CREATE TABLE IF NOT EXISTS chat_messages ("
        " key TEXT NOT NULL, message_id INTEGER NOT NULL, sent_at REAL NOT NULL,"
        " PRIMARY KEY (key, message_id))",
        "CREATE INDEX IF NOT EXISTS chat_messages_sent ON chat_messages(sent_at)",
    ],
    [
        # The last channel update each person's turn came from, and its replies until they
        # are all sent (encrypted): a restarted bot finishes a cut-off turn exactly once.
        "CREATE TABLE IF NOT EXISTS turns ("
        " key TEXT PRIMARY KEY, update_id INTEGER NOT NULL, stage TEXT NOT NULL,"
        " state_before BLOB, outbox BLOB, sent INTEGER NOT NULL DEFAULT 0, at REAL NOT NULL)",
    ],
]
TABLES = ("sessions", "chat_messages", "turns")


def _derive(secret: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        secret.encode("utf-8")
    )


def user_key(secret: str, channel: str, user_id: str | int) -> str:
    """The pseudonymous store key for one person on one channel (HMAC-SHA256)."""
    key = _derive(secret, b"hulpwijzer user key v1")
    message = f"{channel}:{user_id}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def session_cipher(secret: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derive(secret, b"hulpwijzer session state v1")))


@dataclass(frozen=True)
class Turn:
    """Where a person's last channel update got to: 'begun' (the engine may have run),
    'sending' (`outbox` holds the replies, `sent` of them delivered) or 'done'."""

    update_id: int
    stage: str
    sent: int = 0
    outbox: bytes | None = None


class SessionStore(Protocol):
    def load(self, key: str) -> Session | None: ...

    def save(self, key: str, session: Session, now: datetime) -> None: ...

    def delete(self, key: str) -> None: ...

    def purge(self, older_than: datetime) -> int: ...

    def remember_message(self, key: str, message_id: int, now: datetime) -> None: ...

    def message_ids(self, key: str, now: datetime) -> list[int]: ...

    def turn(self, key: str) -> Turn | None: ...

    def begin_turn(self, key: str, update_id: int, now: datetime) -> None: ...

    def undo_turn(self, key: str) -> None: ...

    def journal_outbox(self, key: str, update_id: int, outbox: bytes, now: datetime) -> None: ...

    def mark_sent(self, key: str, sent: int) -> None: ...

    def finish_turn(self, key: str, keep: bool) -> None: ...

    def transaction(self) -> contextlib.AbstractContextManager[None]: ...


class SQLiteSessionStore:
    """SQLite through sqlite-utils; one connection guarded by a lock (threads may share it)."""

    def __init__(self, path: Path | str, cipher: Fernet) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(connection)
        self._lock = threading.RLock()
        self._depth = 0  # nested transaction() calls of the thread holding the lock
        self._cipher = cipher
        with self._lock:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA secure_delete=ON")
            self.db.execute("PRAGMA busy_timeout=5000")
            self._migrate()

    def _migrate(self) -> None:
        version = int(self.db.execute("PRAGMA user_version").fetchone()[0])
        for number, statements in enumerate(_MIGRATIONS, start=1):
            if number <= version:
                continue
            with self.transaction():  # all of one migration, or none of it
                for statement in statements:
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything inside is one SQLite transaction: written together or not at all, and
        committed once (each commit costs more than the statements of a turn together).
        Nests: only the outermost call commits, or rolls back on an exception."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self.db.conn.commit()
            except BaseException:
                self.db.conn.rollback()
                raise
            finally:
                self._depth = 0

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def load(self, key: str) -> Session | None:
        with self._lock:
            row = self.db.execute("SELECT state FROM sessions WHERE key = ?", [key]).fetchone()
        if row is None:
            return None
        try:
            return Session.from_json(self._cipher.decrypt(bytes(row[0])).decode("utf-8"))
        except (InvalidToken, ValueError, TypeError, UnicodeDecodeError):
            # Unreadable (other secret, damaged row): start again rather than crash.
            return None

    def save(self, key: str, session: Session, now: datetime) -> None:
        blob = self._cipher.encrypt(session.to_json().encode("utf-8"))
        with self._lock:
            self.db.execute(
                "INSERT INTO sessions(key, state, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT(key) DO UPDATE SET state = excluded.state, "
                "updated_at = excluded.updated_at",
                [key, blob, now.timestamp()],
            )

    def delete(self, key: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM sessions WHERE key = ?", [key])
            self.db.execute("DELETE FROM chat_messages WHERE key = ?", [key])
            self.db.execute("DELETE FROM turns WHERE key = ?", [key])

    def purge(self, older_than: datetime) -> int:
        """Delete idle sessions (and their message ids); returns how many sessions went."""
        cutoff = older_than.timestamp()
        with self.transaction():
            stale = [
                row[0]
                for row in self.db.execute(
                    "SELECT key FROM sessions WHERE updated_at < ?", [cutoff]
                ).fetchall()
            ]
            self.db.execute(
                "DELETE FROM turns WHERE key IN (SELECT key FROM sessions WHERE updated_at < ?)",
                [cutoff],
            )
            self.db.execute("DELETE FROM sessions WHERE updated_at < ?", [cutoff])
            self.db.execute(
                "DELETE FROM chat_messages WHERE key NOT IN (SELECT key FROM sessions)"
            )
            self.db.execute(
                "DELETE FROM turns WHERE key NOT IN (SELECT key FROM sessions) AND at < ?",
                [cutoff],
            )
        return len(stale)

    def remember_message(self, key: str, message_id: int, now: datetime) -> None:
        with self._lock:
            self.db.execute(
                "INSERT OR IGNORE INTO chat_messages(key, message_id, sent_at) VALUES (?, ?, ?)",
                [key, int(message_id), now.timestamp()],
            )
            self.db.execute(
                "DELETE FROM chat_messages WHERE sent_at < ?",
                [(now - MESSAGE_ID_LIFETIME).timestamp()],
            )

    def message_ids(self, key: str, now: datetime) -> list[int]:
        """Message ids still young enough to delete, oldest first."""
        cutoff = (now - MESSAGE_ID_LIFETIME).timestamp()
        with self._lock:
            rows = self.db.execute(
                "SELECT message_id FROM chat_messages WHERE key = ? AND sent_at >= ? "
                "ORDER BY sent_at, message_id",
                [key, cutoff],
            ).fetchall()
        return [int(row[0]) for row in rows]

    def count_rows(self, key: str | None = None) -> int:
        """Rows held in all tables (for one key, or in total): used by tests and `purge`."""
        with self._lock:
            if key is None:
                return sum(
                    int(self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
                    for table in TABLES
                )
            return sum(
                int(
                    self.db.execute(
                        f"SELECT COUNT(*) FROM {table} WHERE key = ?",  # noqa: S608
                        [key],
                    ).fetchone()[0]
                )
                for table in TABLES
            )

    # ------------------------------------------------------------ the turn journal
    def turn(self, key: str) -> Turn | None:
        with self._lock:
            row = self.db.execute(
                "SELECT update_id, stage, sent, outbox FROM turns WHERE key = ?", [key]
            ).fetchone()
        if row is None:
            return None
        outbox = None
        if row[3] is not None:
            try:
                outbox = self._cipher.decrypt(bytes(row[3]))
            except InvalidToken:
                return None  # another secret: nothing to finish
        return Turn(int(row[0]), str(row[1]), int(row[2]), outbox)

    def begin_turn(self, key: str, update_id: int, now: datetime) -> None:
        """Before the engine runs: remember the update and the state it starts from."""
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO turns"
                "(key, update_id, stage, state_before, outbox, sent, at)"
                " VALUES (?, ?, 'begun', (SELECT state FROM sessions WHERE key = ?), NULL, 0, ?)",
                [key, int(update_id), key, now.timestamp()],
            )

    def undo_turn(self, key: str) -> None:
        """A turn cut off before its replies were journaled: put the state back as it was."""
        with self.transaction():
            row = self.db.execute(
                "SELECT state_before, at FROM turns WHERE key = ? AND stage = 'begun'", [key]
            ).fetchone()
            if row is None:
                return
            if row[0] is None:
                self.db.execute("DELETE FROM sessions WHERE key = ?", [key])
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO sessions(key, state, updated_at) VALUES (?, ?, ?)",
                    [key, row[0], row[1]],
                )

    def journal_outbox(self, key: str, update_id: int, outbox: bytes, now: datetime) -> None:
        """The engine's answer, encrypted, until every message of it has been sent."""
        blob = self._cipher.encrypt(outbox)
        with self._lock:
            self.db.execute(
                "INSERT OR REPLACE INTO turns"
                "(key, update_id, stage, state_before, outbox, sent, at)"
                " VALUES (?, ?, 'sending', NULL, ?, 0, ?)",
                [key, int(update_id), blob, now.timestamp()],
            )

    def mark_sent(self, key: str, sent: int) -> None:
        with self._lock:
            self.db.execute("UPDATE turns SET sent = ? WHERE key = ?", [int(sent), key])

    def finish_turn(self, key: str, keep: bool) -> None:
        """Done: keep only the update id (to skip a redelivery), or nothing after an erase."""
        with self._lock:
            if keep:
                self.db.execute(
                    "UPDATE turns SET stage = 'done', state_before = NULL, outbox = NULL "
                    "WHERE key = ?",
                    [key],
                )
            else:
                self.db.execute("DELETE FROM turns WHERE key = ?", [key])

    def integrity_ok(self) -> bool:
        with self._lock:
            return str(self.db.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
