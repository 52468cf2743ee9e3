"""The button-only conversations of tests/conversations/ as scripts for the Telegram
benchmarks (telegram_load.py, reliability.py), and a dry run on a local Assistant that
tells what each turn must produce, so a run can count lost and repeated messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bot.app import build_assistant
from bot.channels.telegram import split_text
from bot.config import PROJECT_ROOT, load_settings
from bot.events import Incoming, Outcome
from bot.session import Session

Turn = tuple[str, str]  # (send | press | press_raw | media, value)
KINDS = ("send", "press", "press_raw", "media", "say")


def load_scripts(root: Path = PROJECT_ROOT) -> list[list[Turn]]:
    """Conversations without typed free text (that is the NLU's benchmark) and without
    /stop or /wis (a benchmark adds its own ending)."""
    scripts = []
    for path in sorted((root / "tests" / "conversations").glob("*.yml")):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        turns: list[Turn] = []
        for turn in spec["turns"]:
            kind = next(k for k in KINDS if k in turn)
            turns.append((kind, str(turn[kind])))
        if any(kind == "say" for kind, _ in turns):
            continue
        if any(kind == "send" and value.split()[0] in ("/stop", "/wis") for kind, value in turns):
            continue
        scripts.append(turns)
    return scripts


def messages_of(outcome: Outcome) -> list[str]:
    """The Telegram messages an Outcome becomes, as texts ('' for a document)."""
    texts: list[str] = []
    for reply in outcome.replies:
        texts += split_text(reply.text)
        if reply.document is not None:
            texts.append("")
    return texts


@dataclass
class DryRun:
    """What one script must produce: messages per turn and the session it ends with."""

    turns: list[list[str]]
    steps: list[str]  # the stored step after each turn ("-": no session)
    final: Session | None


def dry_run(scripts: list[list[Turn]], folder: Path, secret: str) -> list[DryRun]:
    settings = load_settings(
        {
            "HULPWIJZER_SECRET": secret,
            "HULPWIJZER_DB": str(folder / "dry.sqlite3"),
            "HULPWIJZER_VAR": str(folder / "var"),
            "NLU_BACKEND": "none",
        },
    )
    assistant = build_assistant(settings, with_nlu=False)
    runs = []
    for number, script in enumerate(scripts):
        key = assistant.key_for("dry", number)
        buttons: tuple[Any, ...] = ()
        turns = []
        steps = []
        for kind, value in script:
            if kind == "send":
                incoming = Incoming("command", value)
            elif kind == "media":
                incoming = Incoming("media")
            elif kind == "press_raw":
                incoming = Incoming("button", value)
            else:
                data = next(b.data for b in buttons if b.data.rsplit(":", 1)[-1] == value)
                incoming = Incoming("button", data)
            outcome = assistant.handle(key, incoming)
            for reply in outcome.replies:
                if reply.buttons:
                    buttons = reply.buttons
            turns.append(messages_of(outcome))
            now = assistant.store.load(key)
            steps.append(now.step if now is not None else "-")
        runs.append(DryRun(turns, steps, assistant.store.load(key)))
    return runs
