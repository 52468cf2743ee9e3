"""Session state: everything the engine remembers between two messages of one person."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

LANGUAGES = ("nl", "en")
MODES = ("user", "volunteer", "lesson")


@dataclass
class Session:
    """Serialisable and small. `letter` holds personal fields only until one draft is made."""

    lang: str = "nl"
    mode: str = "user"
    step: str = "welcome"
    turn: int = 0
    history: list[str] = field(default_factory=list)
    answers: dict[str, str] = field(default_factory=dict)
    resume: str | None = None
    suggestion: str | None = None
    letter: dict[str, Any] = field(default_factory=dict)
    lesson: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Session:
        """Rebuild a session; raise ValueError on anything that is not a session we wrote."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("session is not an object")
        known = {name: raw[name] for name in cls.__dataclass_fields__ if name in raw}
        session = cls(**known)
        if session.lang not in LANGUAGES or session.mode not in MODES:
            raise ValueError("session has an unknown language or mode")
        if not isinstance(session.step, str) or not isinstance(session.turn, int):
            raise ValueError("session has a malformed step")
        if not isinstance(session.history, list) or not isinstance(session.answers, dict):
            raise ValueError("session has malformed history or answers")
        # Element types too: a damaged or older state must start over, not crash a turn.
        if not all(isinstance(step, str) for step in session.history):
            raise ValueError("session history holds something that is not a step")
        if not all(isinstance(v, str) for pair in session.answers.items() for v in pair):
            raise ValueError("session answers are not text")
        if not all(isinstance(v, str | None) for v in (session.resume, session.suggestion)):
            raise ValueError("session has a malformed resume step or suggestion")
        if not isinstance(session.letter, dict) or not isinstance(session.lesson, dict):
            raise ValueError("session has malformed letter or lesson state")
        return session
