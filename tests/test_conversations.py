"""Whole conversations as data: tests/conversations/*.yml, replayed against the real
Assistant (real data files, real SQLite file), checking what the person would read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.app import Assistant
from bot.events import Button, Incoming, Outcome

HERE = Path(__file__).parent / "conversations"
FILES = sorted(HERE.glob("*.yml"))
TURN_KINDS = ("send", "say", "press", "press_raw", "media")


def _seen(outcome: Outcome) -> str:
    parts: list[str] = []
    for reply in outcome.replies:
        parts.append(reply.text)
        parts.extend(button.label for button in reply.buttons)
        if reply.document is not None:
            parts.append(reply.document.content)
    return "\n".join(parts)


def _press(buttons: tuple[Button, ...], option: str) -> Incoming:
    for button in buttons:
        if button.data.rsplit(":", 1)[-1] == option:
            return Incoming("button", button.data)
    shown = [b.data.rsplit(":", 1)[-1] for b in buttons]
    raise AssertionError(f"no button {option!r} on screen; the buttons are {shown}")


def _incoming(turn: dict[str, Any], buttons: tuple[Button, ...]) -> Incoming:
    kinds = [k for k in TURN_KINDS if k in turn]
    assert len(kinds) == 1, f"a turn needs exactly one of {TURN_KINDS}: {turn}"
    kind = kinds[0]
    value = str(turn[kind])
    if kind == "send":
        return Incoming("command", value)
    if kind == "say":
        return Incoming("text", value)
    if kind == "press":
        return _press(buttons, value)
    if kind == "press_raw":
        return Incoming("button", value)
    return Incoming("media")


def run_conversation(assistant: Assistant, spec: dict[str, Any]) -> None:
    key = assistant.key_for("test", spec.get("user", "conversation-user"))
    buttons: tuple[Button, ...] = ()
    # Everything shown since the last `mark`: the plan and its "more options" together.
    shown_since_mark = ""
    for number, turn in enumerate(spec["turns"], start=1):
        if "mark" in turn:
            shown_since_mark = ""
            continue
        outcome = assistant.handle(key, _incoming(turn, buttons))
        seen = _seen(outcome)
        shown_since_mark += "\n" + seen
        where = f"turn {number} ({turn})"
        assert outcome.replies, f"{where}: the bot did not answer"
        for text in turn.get("expect", []):
            assert text in seen, f"{where}: expected {text!r} in:\n{seen}"
        for text in turn.get("expect_not", []):
            assert text not in seen, f"{where}: did not expect {text!r} in:\n{seen}"
        for text in turn.get("expect_so_far", []):
            assert text in shown_since_mark, f"{where}: expected {text!r} since the mark"
        for text in turn.get("expect_not_so_far", []):
            assert text not in shown_since_mark, f"{where}: {text!r} was shown since the mark"
        if "expect_order" in turn:
            positions = [seen.find(text) for text in turn["expect_order"]]
            assert -1 not in positions, f"{where}: missing one of {turn['expect_order']}"
            assert positions == sorted(positions), f"{where}: wrong order in:\n{seen}"
        if "expect_buttons" in turn:
            ids = [b.data.rsplit(":", 1)[-1] for r in outcome.replies for b in r.buttons]
            assert ids == turn["expect_buttons"], f"{where}: buttons {ids}"
        if turn.get("expect_erased"):
            assert outcome.erase, f"{where}: expected everything to be erased"
            assert assistant.store.count_rows(key) == 0  # type: ignore[attr-defined]
        if turn.get("expect_deleted_message"):
            assert outcome.delete_incoming, f"{where}: expected the message to be deleted"
        with_buttons = [r for r in outcome.replies if r.buttons]
        if with_buttons:
            buttons = with_buttons[-1].buttons


def test_there_are_conversations() -> None:
    assert len(FILES) >= 20


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_conversation(
    path: Path, make_assistant: Callable[..., Assistant], classifier: object
) -> None:
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    assistant = make_assistant(classifier if spec.get("nlu") else None)
    run_conversation(assistant, spec)
