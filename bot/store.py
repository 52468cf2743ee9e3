"""Session storage: pseudonymous keys, encrypted state, retention purge.

The store never sees a channel user id: callers pass `user_key(...)`, an HMAC of it.
State is encrypted with a key derived from the same secret, so the database file alone
reveals nothing a person typed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
import threading
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
]


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


class SessionStore(Protocol):
    def load(self, key: str) -> Session | None: ...

    def save(self, key: str, session: Session, now: datetime) -> None: ...

    def delete(self, key: str) -> None: ...

    def purge(self, older_than: datetime) -> int: ...

    def remember_message(self, key: str, message_id: int, now: datetime) -> None: ...

    def message_ids(self, key: str, now: datetime) -> list[int]: ...


class SQLiteSessionStore:
    """SQLite through sqlite-utils; one connection guarded by a lock (threads may share it)."""

    def __init__(self, path: Path | str, cipher: Fernet) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(connection)
        self._lock = threading.RLock()
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
            with self.db.conn:
                for statement in statements:
                    self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={number}")

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
        with self._lock, self.db.conn:
            self.db.execute("DELETE FROM sessions WHERE key = ?", [key])
            self.db.execute("DELETE FROM chat_messages WHERE key = ?", [key])

    def purge(self, older_than: datetime) -> int:
        """Delete idle sessions (and their message ids); returns how many sessions went."""
        cutoff = older_than.timestamp()
        with self._lock, self.db.conn:
            stale = [
                row[0]
                for row in self.db.execute(
                    "SELECT key FROM sessions WHERE updated_at < ?", [cutoff]
                ).fetchall()
            ]
            self.db.execute("DELETE FROM sessions WHERE updated_at < ?", [cutoff])
            self.db.execute(
                "DELETE FROM chat_messages WHERE key NOT IN (SELECT key FROM sessions)"
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
                    for table in ("sessions", "chat_messages")
                )
            return sum(
                int(
                    self.db.execute(
                        f"SELECT COUNT(*) FROM {table} WHERE key = ?",  # noqa: S608
                        [key],
                    ).fetchone()[0]
                )
                for table in ("sessions", "chat_messages")
            )

    def integrity_ok(self) -> bool:
        with self._lock:
            return str(self.db.execute("PRAGMA integrity_check").fetchone()[0]) == "ok"

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()
