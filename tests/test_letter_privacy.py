"""Personal details typed for a letter are used for one draft and then gone: from the
session and from the raw bytes of the database file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bot.app import Assistant
from bot.events import Incoming, Outcome


def _press(outcome: Outcome, option: str) -> Incoming:
    for reply in outcome.replies:
        for button in reply.buttons:
            if button.data.endswith(f":{option}"):
                return Incoming("button", button.data)
    raise AssertionError(f"no button {option}")


def test_canary_name_and_email_are_gone_after_the_draft(
    make_assistant: Callable[..., Assistant], tmp_path: Path
) -> None:
    assistant = make_assistant()
    key = assistant.key_for("test", "letter-privacy")
    name, email = "Canarius Vogelzang", "canary-7f3a@example.org"
    url = "https://example.com/canary-path-91b2"
    outcome = assistant.handle(key, Incoming("command", "/start"))
    for option in ["nl", "yes", "me", "adult", "doxing", "yes", "x", "letter", "x"]:
        outcome = assistant.handle(key, _press(outcome, option))
    outcome = assistant.handle(key, Incoming("text", url))
    # While the draft is being made, the details are in the session (encrypted).
    outcome = assistant.handle(key, Incoming("text", name))
    session = assistant.store.load(key)
    assert session is not None and session.letter.get("name") == name
    outcome = assistant.handle(key, Incoming("text", email))
    drafted = "\n".join(r.text for r in outcome.replies)
    assert name in drafted and email in drafted and url in drafted
    assert any(r.document and name in r.document.content for r in outcome.replies)
    session = assistant.store.load(key)
    assert session is not None
    assert session.letter == {}
    assert name not in session.to_json() and email not in session.to_json()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("hw.sqlite3*"))
    for canary in (name, email, url):
        assert canary.encode() not in raw
