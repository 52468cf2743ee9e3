"""Lesson mode for schools: made-up cases, "what would you advise?", feedback per option.

It is practice, so it keeps as little as it can: the lesson's place lives in the session
only while the lesson runs, and the last turn erases it (`Outcome.erase`). A pupil may
still type something real, so typed text passes the crisis rules first; a crisis ends the
practice and hands the pupil to the normal triage at its crisis step (mode "user").
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bot.directory import Directory
from bot.engine import (
    CRISIS_INTENTS,
    MAX_TEXT_LENGTH,
    CrisisDetector,
    EngineSettings,
    TriageEngine,
)
from bot.errors import DataError
from bot.events import Button, Incoming, Outcome, Reply
from bot.flow import Flow, read_yaml
from bot.session import LANGUAGES, Session
from bot.texts import Texts

LESSONS_FILE = "lessons.yml"
MIN_CASES = 5
# Button choices the mode itself uses; no case or option may be called like this.
RESERVED = frozenset({"menu", "end", "again", "next"})
# Sentences the mode says besides the cases (all under `lessons:` in responses/).
MODE_KEYS = (
    "lessons.intro",
    "lessons.menu",
    "lessons.menu_again",
    "lessons.ask",
    "lessons.typed",
    "lessons.help",
    "lessons.language",
    "lessons.handover",
    "lessons.verdict.helps",
    "lessons.verdict.partly",
    "lessons.verdict.harms",
    "lessons.button.menu",
    "lessons.button.again",
    "lessons.button.next",
    "lessons.button.end",
    "lessons.end.text",
    "lessons.end.real_help",
    "lessons.end.for_real",
)
_BUTTON = re.compile(r"^(\d{1,6}):(menu|case|fb):([a-z0-9_]{1,24})$")
_ID = r"^[a-z0-9_]{1,24}$"

Verdict = Literal["helps", "partly", "harms"]
Stage = Literal["menu", "case", "fb"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LessonOption(_Model):
    """One answer a pupil can give, and why it helps or harms."""

    id: str = Field(pattern=_ID)
    label: str
    verdict: Verdict
    feedback: str


class LessonCase(_Model):
    """A made-up situation with a few possible pieces of advice."""

    id: str = Field(pattern=_ID)
    title: str
    story: str
    options: list[LessonOption] = Field(min_length=2)

    @model_validator(mode="after")
    def _teaches_both_ways(self) -> LessonCase:
        ids = [o.id for o in self.options]
        if len(set(ids)) != len(ids):
            raise ValueError("two options have the same id")
        verdicts = {o.verdict for o in self.options}
        if not {"helps", "harms"} <= verdicts:
            raise ValueError("needs at least one option that helps and one that harms")
        return self

    def option(self, option_id: str) -> LessonOption | None:
        return next((o for o in self.options if o.id == option_id), None)


class Lessons(_Model):
    real_help: list[str] = Field(min_length=1)
    cases: list[LessonCase] = Field(min_length=MIN_CASES)

    @model_validator(mode="after")
    def _unique_cases(self) -> Lessons:
        ids = [c.id for c in self.cases]
        if len(set(ids)) != len(ids):
            raise ValueError("two cases have the same id")
        ids_used = {c.id for c in self.cases} | {o.id for c in self.cases for o in c.options}
        used = RESERVED & ids_used
        if used:
            raise ValueError(f"{', '.join(sorted(used))} is reserved; give it another id")
        return self

    def case(self, case_id: str) -> LessonCase | None:
        return next((c for c in self.cases if c.id == case_id), None)

    def text_keys(self) -> list[tuple[str, str]]:
        """(where, key) for every sentence the lessons need."""
        wanted = [("lesson mode", key) for key in MODE_KEYS]
        for case in self.cases:
            wanted.append((f"case {case.id}: title", case.title))
            wanted.append((f"case {case.id}: story", case.story))
            for option in case.options:
                where = f"case {case.id}, option {option.id}"
                wanted.append((f"{where}: label", option.label))
                wanted.append((f"{where}: feedback", option.feedback))
        return wanted


def load_lessons(path: Path) -> Lessons:
    """Parse and validate data/lessons.yml; every problem is raised at once."""
    where = str(path)
    raw = read_yaml(path)
    try:
        return Lessons.model_validate(raw)
    except ValidationError as error:
        raise DataError(
            [f"{where}: {_location(e['loc'])}: {e['msg']}" for e in error.errors()]
        ) from None


def lesson_problems(lessons: Lessons, texts: Texts, directory: Directory, where: str) -> list[str]:
    """Text keys missing in a language and organisations that don't exist."""
    found: list[str] = []
    for lang in LANGUAGES:
        for place, key in lessons.text_keys():
            if not texts.has(key, lang):
                found.append(f"{where}: {place}: text key {key} is missing in responses/{lang}.yml")
    for org_id in lessons.real_help:
        if org_id not in directory.organisations:
            found.append(f"{where}: real_help: unknown organisation {org_id!r}")
    return found


def check_lessons(path: Path, texts: Texts, directory: Directory) -> list[str]:
    """For `hulpwijzer check`: the file, its text keys and its organisations."""
    try:
        lessons = load_lessons(path)
    except DataError as error:
        return error.problems
    return lesson_problems(lessons, texts, directory, str(path))


def _location(loc: Iterable[object]) -> str:
    return ".".join(str(part) for part in loc) or "(top)"


class LessonMode:
    """Walks a pupil through the cases; pure like the engine (no clock, no storage)."""

    def __init__(
        self,
        lessons: Lessons,
        flow: Flow,
        texts: Texts,
        directory: Directory,
        detect_crisis: CrisisDetector,
        settings: EngineSettings | None = None,
    ) -> None:
        self.lessons = lessons
        self.texts = texts
        # Its own engine without a lesson mode: where a pupil in crisis is handed over to.
        self.triage = TriageEngine(flow, texts, directory, detect_crisis, settings)
        self._aliases = {
            alias.lower(): action for action, names in flow.commands.items() for alias in names
        }

    # ------------------------------------------------------------------ entry point
    def step(self, session: Session, incoming: Incoming) -> tuple[Session | None, Outcome]:
        s = copy.deepcopy(session)
        out = Outcome()
        typed_command = incoming.kind == "text" and incoming.text.lstrip().startswith("/")
        if incoming.kind == "command" or typed_command:
            return self._command(s, incoming, out)
        if incoming.kind == "media":
            out.delete_incoming = True
            out.replies.append(Reply(self._t(s, "media.removed")))
            self._render(s, out)
            return s, out
        if incoming.kind == "button":
            choice = self._pressed(s, incoming.text)
            if choice is None:
                self._render(s, out, lead="error.stale_button")
                return s, out
        else:
            if self._is_crisis(incoming):
                return self._hand_over(s, incoming)
            if not incoming.text.strip():
                self._render(s, out, lead="error.empty")
                return s, out
            if len(incoming.text) > MAX_TEXT_LENGTH:
                self._render(s, out, lead="error.too_long", limit=MAX_TEXT_LENGTH)
                return s, out
            choice = self._typed(s, incoming.text)
            if choice is None:
                number = incoming.text.strip().isdecimal()
                self._render(s, out, lead="fallback.choose" if number else "lessons.typed")
                return s, out
        return self._choose(s, choice, incoming, out)

    # ------------------------------------------------------------------ input
    def _command(
        self, s: Session, incoming: Incoming, out: Outcome
    ) -> tuple[Session | None, Outcome]:
        name, payload = incoming.command
        action = self._aliases.get(name)
        if action in ("start", "restart"):
            s.lesson = {}
            out.replies.append(Reply(self._t(s, "lessons.intro")))
            self._render(s, out)
        elif action == "language" and payload.lower()[:2] in LANGUAGES:
            s.lang = payload.lower()[:2]
            if self._stage(s) == "menu" and not s.lesson.get("seen"):
                # Still at the start: say again, in this language, that it is practice.
                out.replies.append(Reply(self._t(s, "lessons.intro")))
            self._render(s, out)
        elif action == "language":
            self._render(s, out, lead="lessons.language")
        elif action == "back":
            stage = self._stage(s)
            s.lesson["stage"] = "case" if stage == "fb" else "menu"
            self._render(s, out)
        else:
            self._render(s, out, lead="lessons.help")
        return s, out

    def _pressed(self, s: Session, data: str) -> str | None:
        match = _BUTTON.match(data.strip()) if len(data) <= 64 else None
        if match is None or int(match.group(1)) != s.turn or match.group(2) != self._stage(s):
            return None
        choice = match.group(3)
        return choice if choice in dict(self._choices(s)) else None

    def _typed(self, s: Session, text: str) -> str | None:
        """A typed number or label counts as pressing that button, as in the triage."""
        choices = self._choices(s)
        typed = " ".join(text.strip().lower().split())
        # Length first (issue 7 fuzz): int() refuses more than 4,300 digits with ValueError.
        if typed.isdecimal() and len(typed) <= 6:
            index = int(typed) - 1
            return choices[index][0] if 0 <= index < len(choices) else None
        for choice, label in choices:
            if typed and typed == label.lower():
                return choice
        return None

    def _is_crisis(self, incoming: Incoming) -> bool:
        """The same test the triage makes: the rules, or a sure crisis intent."""
        if self.triage.detect_crisis(incoming.text) is not None:
            return True
        parse = incoming.parse
        return bool(
            parse
            and parse.intent in CRISIS_INTENTS
            and parse.confidence >= self.triage.settings.crisis_threshold
        )

    def _hand_over(self, s: Session, incoming: Incoming) -> tuple[Session | None, Outcome]:
        """Practice stops; the normal triage answers the crisis and carries on from there."""
        real = self.triage.new_session(s.lang, "user")
        session, out = self.triage.step(real, incoming)
        out.replies.insert(0, Reply(self._t(s, "lessons.handover")))
        return session, out

    # ------------------------------------------------------------------ moving
    def _choose(
        self, s: Session, choice: str, incoming: Incoming, out: Outcome
    ) -> tuple[Session | None, Outcome]:
        if choice == "end":
            return self._finish(s, incoming)
        stage, state = self._stage(s), s.lesson
        seen: list[str] = list(state.get("seen", []))
        if choice == "menu":
            s.lesson = {"stage": "menu", "seen": seen}
        elif choice == "again":
            s.lesson = {"stage": "case", "case": state["case"], "seen": seen}
        elif choice == "next":
            s.lesson = {"stage": "case", "case": self._next_case(seen), "seen": seen}
        elif stage == "menu":
            s.lesson = {"stage": "case", "case": choice, "seen": seen}
        else:
            case_id = state["case"]
            if case_id not in seen:
                seen.append(case_id)
            s.lesson = {"stage": "fb", "case": case_id, "answer": choice, "seen": seen}
        self._render(s, out)
        return s, out

    def _finish(self, s: Session, incoming: Incoming) -> tuple[Session | None, Outcome]:
        """Where real help is, how to reach Hulpwijzer for real; then nothing is kept."""
        orgs = [
            self.triage.organisation_text(s.lang, org_id, incoming.now)
            for org_id in self.lessons.real_help
        ]
        help_text = "\n\n".join(
            [
                self._t(s, "lessons.end.real_help"),
                "\n".join(f"• {line}" for line in orgs),
                self._t(s, "lessons.end.for_real"),
            ]
        )
        replies = [Reply(self._t(s, "lessons.end.text")), Reply(help_text)]
        return None, Outcome(replies=replies, erase=True)

    def _next_case(self, seen: list[str]) -> str:
        fresh = [c.id for c in self.lessons.cases if c.id not in seen]
        return (fresh or [self.lessons.cases[0].id])[0]

    # ------------------------------------------------------------------ rendering
    def _stage(self, s: Session) -> Stage:
        """The lesson's place, repaired to the menu if the data changed under it."""
        state: dict[str, Any] = s.lesson
        stage = state.get("stage")
        case = self.lessons.case(str(state.get("case", "")))
        if stage == "case" and case is not None:
            return "case"
        if stage == "fb" and case is not None and case.option(str(state.get("answer", ""))):
            return "fb"
        return "menu"

    def _choices(self, s: Session) -> list[tuple[str, str]]:
        """(choice, label) of the buttons on screen now."""
        stage, seen = self._stage(s), s.lesson.get("seen", [])
        if stage == "case":
            case = self._current_case(s)
            choices = [(o.id, self._t(s, o.label)) for o in case.options]
            return [*choices, ("menu", self._t(s, "lessons.button.menu"))]
        if stage == "fb":
            choices = [("again", self._t(s, "lessons.button.again"))]
            if any(c.id not in seen for c in self.lessons.cases):
                choices.append(("next", self._t(s, "lessons.button.next")))
            return [
                *choices,
                ("menu", self._t(s, "lessons.button.menu")),
                ("end", self._t(s, "lessons.button.end")),
            ]
        cases = [
            (c.id, ("✓ " if c.id in seen else "") + self._t(s, c.title)) for c in self.lessons.cases
        ]
        return [*cases, ("end", self._t(s, "lessons.button.end"))]

    def _current_case(self, s: Session) -> LessonCase:
        case = self.lessons.case(str(s.lesson.get("case", "")))
        return case if case is not None else self.lessons.cases[0]

    def _render(
        self, s: Session, out: Outcome, lead: str | None = None, **values: object
    ) -> None:
        """Say why (if needed), then show the lesson's current screen with fresh buttons."""
        if lead:
            out.replies.append(Reply(self.texts.get(s.lang, lead, None, **values)))
        stage = self._stage(s)
        s.lesson = {**s.lesson, "stage": stage}
        s.turn += 1
        if stage == "case":
            case = self._current_case(s)
            parts = [self._t(s, case.title), self._t(s, case.story), self._t(s, "lessons.ask")]
            text = "\n\n".join(parts)
        elif stage == "fb":
            option = self._current_case(s).option(str(s.lesson.get("answer")))
            assert option is not None  # _stage checked it
            verdict = self._t(s, f"lessons.verdict.{option.verdict}")
            text = f"{verdict}\n{self._t(s, option.feedback)}"
        else:
            text = self._t(s, "lessons.menu_again" if s.lesson.get("seen") else "lessons.menu")
        buttons = tuple(
            Button(f"{s.turn}:{stage}:{choice}", label) for choice, label in self._choices(s)
        )
        out.replies.append(Reply(text, buttons, kind="lesson"))

    def _t(self, s: Session, key: str) -> str:
        return self.texts.get(s.lang, key)


def load_lesson_mode(
    data_dir: Path,
    flow: Flow,
    texts: Texts,
    directory: Directory,
    detect_crisis: CrisisDetector,
    settings: EngineSettings | None = None,
) -> LessonMode:
    """Load data/lessons.yml and check it against the texts; fail fast with every problem."""
    path = data_dir / LESSONS_FILE
    lessons = load_lessons(path)
    problems = lesson_problems(lessons, texts, directory, str(path))
    if problems:
        raise DataError(problems)
    return LessonMode(lessons, flow, texts, directory, detect_crisis, settings)


# ---------------------------------------------------------------------- the deep link as a QR code
_BOT_USERNAME = re.compile(r"^[A-Za-z0-9_]{5,32}$")
_PAYLOAD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
QR_BOX_PIXELS = 20  # about 6 cm wide at 300 dpi: big enough for a poster
QR_BORDER_BOXES = 4


class QRInputError(ValueError):
    """Bad input for `hulpwijzer qr`; the message is one sentence for the operator."""


def deep_link(bot_username: str, payload: str) -> str:
    """https://t.me/NAME?start=PAYLOAD, after checking both against Telegram's rules."""
    name = bot_username.removeprefix("@")
    if not _BOT_USERNAME.match(name):
        raise QRInputError(
            f"--bot-username {bot_username!r} is not a Telegram bot username "
            "(5 to 32 letters, digits or _)."
        )
    if not _PAYLOAD.match(payload):
        raise QRInputError(
            f"--payload {payload!r} can't be a start parameter "
            "(1 to 64 letters, digits, _ or -)."
        )
    return f"https://t.me/{name}?start={payload}"


def make_qr(link: str) -> Any:
    """The QR code object for a link; medium error correction survives a smudged poster."""
    import qrcode
    from qrcode.constants import ERROR_CORRECT_M

    code = qrcode.QRCode(
        error_correction=ERROR_CORRECT_M, box_size=QR_BOX_PIXELS, border=QR_BORDER_BOXES
    )
    code.add_data(link)
    code.make(fit=True)
    return code


def write_qr(bot_username: str, payload: str, out: Path) -> str:
    """Write the deep link as a PNG for slides and posters; returns the link."""
    link = deep_link(bot_username, payload)
    if out.suffix.lower() != ".png":
        raise QRInputError(f"--out {str(out)!r} must be a .png file.")
    if not out.parent.is_dir():
        raise QRInputError(f"--out: the folder {str(out.parent)!r} does not exist.")
    image = make_qr(link).make_image(fill_color="black", back_color="white")
    try:
        image.save(out)
    except OSError as error:
        raise QRInputError(f"--out: can't write {str(out)!r} ({error.strerror}).") from None
    return link


def cmd_qr(args: Any, stdout: Any, stderr: Any) -> int:
    """`hulpwijzer qr`: exit 2 with one sentence on bad input, else print the link."""
    try:
        link = write_qr(args.bot_username, args.payload, Path(args.out))
    except QRInputError as error:
        print(f"hulpwijzer qr: {error}", file=stderr)
        return 2
    print(f"{link} -> {args.out}", file=stdout)
    return 0
