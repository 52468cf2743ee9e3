"""What flows between a channel and the engine: plain values, no channel types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

IncomingKind = Literal["text", "button", "command", "media"]


@dataclass(frozen=True)
class Parse:
    """What the classifier suggests for a free text; the engine decides what to do with it."""

    intent: str
    confidence: float
    entities: tuple[tuple[str, str], ...] = ()

    def entity_values(self, name: str) -> list[str]:
        return [value for entity, value in self.entities if entity == name]


@dataclass(frozen=True)
class Incoming:
    """One thing the user did: typed text, pressed a button, sent a command or media."""

    kind: IncomingKind
    text: str = ""
    now: datetime | None = None
    parse: Parse | None = None

    @property
    def command(self) -> tuple[str, str]:
        """('/start', 'payload') for a command; the name is lower-cased, '@botname' removed."""
        head, _, payload = self.text.strip().partition(" ")
        name = head.split("@", 1)[0].lower()
        return name, payload.strip()


@dataclass(frozen=True)
class Button:
    data: str
    label: str


@dataclass(frozen=True)
class Document:
    filename: str
    content: str


@dataclass(frozen=True)
class Reply:
    """One message to show. `buttons` is one column of options."""

    text: str
    buttons: tuple[Button, ...] = ()
    document: Document | None = None
    kind: str = "message"


@dataclass
class Outcome:
    """What one step produced. `erase` asks the channel to delete stored data (and, on
    Telegram, the chat messages); `delete_incoming` asks it to remove the user's message."""

    replies: list[Reply] = field(default_factory=list)
    erase: bool = False
    delete_incoming: bool = False
    wipe_chat: bool = False
