"""The triage state machine: `step(session, incoming) -> (session, outcome)`, pure.

No network, no database, no clock of its own: the channel passes `now` in the event, the
app loads and saves the session. That keeps every conversation a plain test.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from bot import letters
from bot.directory import SITUATIONS, Directory, Organisation
from bot.events import Button, Document, Incoming, Outcome, Parse, Reply
from bot.flow import ERASE, RESUME, SUGGESTION, Advice, Flow, Option, Step, matches, resolve
from bot.session import LANGUAGES, Session
from bot.texts import Texts

CRISIS_INTENTS = {"crisis_suicide": "crisis_suicide", "crisis_danger": "crisis_danger"}
# Slots that describe the person, kept when they start on another situation.
PERSON_SLOTS = ("who", "age")
MINOR_AGES = ("u13", "a13_15", "a16_17")
MAX_TEXT_LENGTH = 4000
MAX_HISTORY = 60
PLAN_TOP = 3
# Common function words, to answer a first message in the language it was written in.
_ENGLISH = frozenset(
    "i im i'm me my the a is are was he she they you your it to and of in on at now right "
    "want don't dont can help please someone outside house home with this that what".split()
)
_DUTCH = frozenset(
    "ik me mij mijn mn de het een is zijn was hij zij ze je jij jouw u nu wil niet kan "
    "help hulp iemand voor deur huis thuis met dit dat wat van en op bij".split()
)
_WORD = re.compile(r"[a-z']+")


def guess_language(text: str) -> str | None:
    """'en' or 'nl' when the words clearly lean one way, else None."""
    words = _WORD.findall(text.lower())
    english = sum(w in _ENGLISH and w not in _DUTCH for w in words)
    dutch = sum(w in _DUTCH and w not in _ENGLISH for w in words)
    if english >= 2 and english > 2 * dutch:
        return "en"
    if dutch >= 2 and dutch > 2 * english:
        return "nl"
    return None


_BUTTON = re.compile(r"^(\d{1,6}):([a-z0-9_]{1,32}):([a-z0-9_]{1,24})$")


class CrisisSignal(Protocol):
    @property
    def kind(self) -> str: ...


class LessonMode(Protocol):
    """Practice mode for schools (bot/lesson.py); the engine hands lesson sessions to it."""

    def step(self, session: Session, incoming: Incoming) -> tuple[Session | None, Outcome]: ...


CrisisDetector = Callable[[str], CrisisSignal | None]


@dataclass(frozen=True)
class EngineSettings:
    ttl_hours: int = 24
    nlu_threshold: float = 0.6
    crisis_threshold: float = 0.35


@dataclass
class _Turn(Outcome):
    """The outcome being built, plus the time this turn happens (for 'open now')."""

    now: datetime | None = None


def _now(out: Outcome) -> datetime | None:
    return out.now if isinstance(out, _Turn) else None


class TriageEngine:
    """Walks the flow graph. Every public path returns replies; nothing raises for user input."""

    def __init__(
        self,
        flow: Flow,
        texts: Texts,
        directory: Directory,
        detect_crisis: CrisisDetector,
        settings: EngineSettings | None = None,
        lesson: LessonMode | None = None,
    ) -> None:
        self.lesson = lesson
        self.flow = flow
        self.texts = texts
        self.directory = directory
        self.detect_crisis = detect_crisis
        self.settings = settings or EngineSettings()
        self._aliases = {
            alias.lower(): action for action, names in flow.commands.items() for alias in names
        }

    # ------------------------------------------------------------------ entry point
    def new_session(self, lang: str = "nl", mode: str = "user") -> Session:
        return Session(lang=lang, mode=mode, step=self.flow.start)

    def step(self, session: Session | None, incoming: Incoming) -> tuple[Session | None, Outcome]:
        state = copy.deepcopy(session) if session is not None else self.new_session()
        if state.step not in self.flow.steps:
            state = self.new_session(state.lang, state.mode)
        out = _Turn(now=incoming.now)
        typed_command = incoming.kind == "text" and incoming.text.lstrip().startswith("/")
        # A typed "/start" or "/stop" must work in a lesson too (the lesson tells pupils to
        # type /start for real help), so commands go through _command in every mode.
        if state.mode == "lesson" and self.lesson is not None and incoming.kind != "command":
            if not typed_command:
                return self.lesson.step(state, incoming)
        # Typed "/stop" is a command; button data "/stop" is a forged button (issue 7 fuzz).
        if incoming.kind == "command" or typed_command:
            return self._command(state, incoming, out, fresh=session is None)
        if incoming.kind == "media":
            out.delete_incoming = True
            out.replies.append(Reply(self._t(state, "media.removed")))
            self._repeat(state, out)
            return state, out
        if incoming.kind == "button":
            self._button(state, incoming.text, out)
        else:
            self._text(state, incoming, out, fresh=session is None)
        return (None if out.erase else state), out

    # ------------------------------------------------------------------ kinds of input
    def _text(self, s: Session, incoming: Incoming, out: Outcome, fresh: bool) -> None:
        text = incoming.text
        if fresh:
            s.lang = guess_language(text[:MAX_TEXT_LENGTH]) or s.lang
        crisis = self._crisis(text, incoming.parse)
        if crisis:
            self._interrupt(s, crisis, out)
            return
        if not text.strip():
            self._repeat(s, out, lead="error.empty")
            return
        if len(text) > MAX_TEXT_LENGTH:
            self._repeat(s, out, lead="error.too_long", limit=MAX_TEXT_LENGTH)
            return
        step = self.flow.step(s.step)
        parse = incoming.parse
        if fresh:
            # A first message that already says what happened is remembered (as an
            # intent name only) and confirmed once the person reaches that question.
            if parse and parse.intent in SITUATIONS and self._sure(parse):
                s.suggestion = parse.intent
                self._prefill(s, parse)
            self._render_into(s, out)
            return
        if step.free_text in ("urls", "name", "email"):
            self._letter_input(s, step, text, out)
            return
        option = self._option_from_text(s, step, text)
        if option is not None:
            self._choose(s, step, option, out)
            return
        if parse and self._sure(parse) and parse.intent == "stop":
            self._enter_entry(s, "stop_confirm", out)
            return
        if parse and self._sure(parse) and parse.intent == "ask_human":
            out.replies.append(self._reply_for_step(s, self.flow.step("humans"), _now(out)))
            self._repeat(s, out)
            return
        if step.free_text == "situation" and parse and parse.intent in SITUATIONS:
            if self._sure(parse):
                s.suggestion = parse.intent
                self._prefill(s, parse)
                self._goto(s, "confirm_situation", out, remember=True)
                return
        lead = "fallback.situation" if step.free_text == "situation" else "fallback.choose"
        self._repeat(s, out, lead=lead)

    def _button(self, s: Session, data: str, out: Outcome) -> None:
        match = _BUTTON.match(data.strip()) if len(data) <= 64 else None
        step = self.flow.step(s.step)
        # A button counts when it belongs to the question asked now, from a turn that
        # happened: an earlier copy of the same question (asked again after an unclear
        # answer) means the same thing, so it is not refused; a turn from the future is.
        if match is None or match.group(2) != s.step or int(match.group(1)) > s.turn:
            self._repeat(s, out, lead="error.stale_button")
            return
        option = step.option(match.group(3))
        if option is None or option not in step.visible_options(s.answers):
            self._repeat(s, out, lead="error.stale_button")
            return
        self._choose(s, step, option, out)

    def _command(
        self, s: Session, incoming: Incoming, out: Outcome, fresh: bool
    ) -> tuple[Session | None, Outcome]:
        name, payload = incoming.command
        action = self._aliases.get(name)
        if action == "start":
            lang, mode = self._start_payload(payload, s)
            s = self.new_session(lang, mode)
            if mode == "lesson" and self.lesson is not None:
                return self.lesson.step(s, incoming)
            if payload.lower() in self.flow.commands.get("lesson_payloads", []):
                out.replies.append(Reply(self._t(s, "lesson.coming")))
            self._render_into(s, out)
            return s, out
        if action in ("stop", "wipe"):
            out.erase = True
            out.wipe_chat = action == "wipe"
            out.replies.append(Reply(self._t(s, "stop.done" if action == "stop" else "wipe.done")))
            return None, out
        if s.mode == "lesson" and self.lesson is not None:
            # Help, language, back and the like mean something else in a practice lesson.
            return self.lesson.step(s, incoming)
        if action == "help":
            self._repeat(s, out, lead="help.text")
        elif action == "privacy":
            self._repeat(s, out, lead="privacy.short", hours=self.settings.ttl_hours)
        elif action == "restart":
            s = self.new_session(s.lang, s.mode)
            self._render_into(s, out)
        elif action == "back":
            self._back(s, out)
        elif action == "language":
            code = payload.lower()[:2]
            if code in LANGUAGES:
                s.lang = code
                self._render_into(s, out)
            else:
                self._enter_entry(s, "language", out)
        else:
            self._repeat(s, out, lead="error.unknown_command")
        return s, out

    # ------------------------------------------------------------------ moving through the graph
    def _choose(self, s: Session, step: Step, option: Option, out: Outcome) -> None:
        suggested = s.suggestion
        if step.id == "confirm_situation":
            s.suggestion = None  # answered, whatever the answer
        if "situation" in option.set:
            self._forget_situation(s)
        for slot, value in option.set.items():
            if slot == "lang":
                s.lang = value if value in LANGUAGES else s.lang
            else:
                s.answers[slot] = value
        target = step.target_of(option)
        name = resolve(target, s.answers) if target is not None else None
        if name is None:
            self._repeat(s, out)
            return
        if name == SUGGESTION:
            self._accept_suggestion(s, suggested, out)
            return
        if name == ERASE:
            out.erase = True
            out.replies.append(Reply(self._t(s, "stop.done")))
            return
        # A button into an interruption ("talk to a person") comes back here afterwards,
        # as a typed one does; without it "go on" restarted at the first question.
        entering = name in self.flow.entry_points and step.id not in self.flow.entry_points
        if entering:
            s.resume = step.id
        self._goto(s, name, out, remember=step.id not in self.flow.entry_points and not entering)

    def _accept_suggestion(self, s: Session, suggested: str | None, out: Outcome) -> None:
        situation_step = self.flow.step("situation")
        option = situation_step.option(suggested or "")
        if option is None:
            self._goto(s, "situation", out, remember=False)
            return
        platform = s.answers.get("platform")
        self._choose(s, situation_step, option, out)
        if platform and "platform" not in s.answers:
            s.answers["platform"] = platform

    def _goto(self, s: Session, name: str, out: Outcome, remember: bool) -> None:
        if remember:
            s.history = [*s.history, s.step][-MAX_HISTORY:]
        for _ in range(len(self.flow.steps) + 1):
            if name == RESUME:
                name = s.resume or self.flow.start
                s.resume = None
            if name == "situation" and s.suggestion:
                name = "confirm_situation"
            step = self.flow.steps.get(name)
            if step is None:
                name = self.flow.start
                continue
            if step.ask_if and not matches(step.ask_if, s.answers) and step.next is not None:
                following = resolve(step.next, s.answers)
                if following is None:
                    break
                name = following
                continue
            break
        s.step = name
        entered = self.flow.step(name)
        # Documents are made once, on the way in; asking the question again doesn't redo them.
        if entered.kind == "letter_ready":
            out.replies.extend(self._document_replies(s, None))
        elif entered.kind in ("aangifte", "evidence"):
            out.replies.extend(self._document_replies(s, entered.kind))
        if entered.free_text not in ("urls", "name", "email"):
            s.letter = {}  # left the letter questions: nothing typed for it is kept
        self._render_into(s, out)

    def _enter_entry(self, s: Session, name: str, out: Outcome) -> None:
        """Interruptions (crisis, language, stop?) remember where to come back to."""
        if s.step not in self.flow.entry_points:
            s.resume = s.step
        s.step = name
        self._render_into(s, out)

    def _interrupt(self, s: Session, crisis: str, out: Outcome) -> None:
        self._enter_entry(s, crisis, out)

    def _back(self, s: Session, out: Outcome) -> None:
        if s.step in self.flow.entry_points:
            target = s.resume or self.flow.start
            s.resume = None
            s.step = target
            self._render_into(s, out)
            return
        if not s.history:
            self._repeat(s, out, lead="back.nothing")
            return
        s.step = s.history[-1]
        s.history = s.history[:-1]
        if s.step == "situation":
            s.suggestion = None
        self._render_into(s, out)

    def _forget_situation(self, s: Session) -> None:
        s.answers = {k: v for k, v in s.answers.items() if k in PERSON_SLOTS}

    def _prefill(self, s: Session, parse: Parse) -> None:
        known = set(self.directory.platforms)
        for value in parse.entity_values("platform"):
            if value in known:
                s.answers["platform"] = value
                return

    # ------------------------------------------------------------------ understanding text
    def _crisis(self, text: str, parse: Parse | None) -> str | None:
        found = self.detect_crisis(text)
        if found is not None:
            return "crisis_suicide" if found.kind == "suicide" else "crisis_danger"
        if parse and parse.intent in CRISIS_INTENTS:
            if parse.confidence >= self.settings.crisis_threshold:
                return CRISIS_INTENTS[parse.intent]
        return None

    def _sure(self, parse: Parse) -> bool:
        return parse.confidence >= self.settings.nlu_threshold and parse.intent != "out_of_scope"

    def _option_from_text(self, s: Session, step: Step, text: str) -> Option | None:
        """A typed number, label or yes/no word counts as pressing that button."""
        options = step.visible_options(s.answers)
        typed = " ".join(text.strip().lower().split())
        if typed.isdecimal():  # not isdigit(): '²' is a digit that int() refuses
            index = int(typed) - 1
            return options[index] if 0 <= index < len(options) else None
        for option in options:
            label = self._t(s, option.label).lower()
            if typed in (label, option.id):
                return option
        words = self.flow.commands.get(f"word_{typed}")
        if words:
            for option in options:
                if option.id in words:
                    return option
        return None

    # ------------------------------------------------------------------ rendering
    def _t(self, s: Session, key: str, variant: str | None = None, **values: object) -> str:
        return self.texts.get(s.lang, key, variant, **values)

    def _render_into(self, s: Session, out: Outcome) -> None:
        s.turn += 1
        out.replies.append(self._reply_for_step(s, self.flow.step(s.step), _now(out)))

    def _repeat(self, s: Session, out: Outcome, lead: str | None = None, **values: object) -> None:
        """Say why, then ask the current question again with fresh buttons."""
        if lead:
            out.replies.append(Reply(self.texts.get(s.lang, lead, None, **values)))
        self._render_into(s, out)

    def _reply_for_step(self, s: Session, step: Step, now: datetime | None) -> Reply:
        variant = s.answers.get(step.variant_by) if step.variant_by else None
        if step.kind == "plan" and s.mode == "volunteer":
            variant = "volunteer"  # the plan is read aloud to the caller
        values: dict[str, object] = {"hours": self.settings.ttl_hours}
        if s.suggestion:
            values["situation"] = self._t(s, f"opt.situation.{s.suggestion}")
        parts = [self._t(s, step.text, variant, **values)]
        if step.kind in ("plan", "plan_more"):
            parts.append(self._plan_text(s, now, more=step.kind == "plan_more"))
        for org_id in step.orgs:
            parts.append(self._org_block(s, org_id, now))
        if s.mode == "volunteer" and step.note:
            note = self._t(s, "volunteer.note", step=step.id, note=self._t(s, step.note))
            parts.insert(0, note)
        buttons = tuple(
            Button(f"{s.turn}:{step.id}:{option.id}", self._t(s, option.label))
            for option in step.visible_options(s.answers)
        )
        return Reply("\n\n".join(p for p in parts if p), buttons, kind=step.kind)

    def plan_items(self, s: Session) -> list[Advice]:
        return self.flow.plan(s.answers)

    def _plan_text(self, s: Session, now: datetime | None, more: bool) -> str:
        items = self.plan_items(s)
        firsts = [a for a in items if a.tier == "first"]
        steps = [a for a in items if a.tier == "step"]
        extra = [a for a in items if a.tier == "more"]
        sections: list[str] = []
        who = s.answers.get("who")
        if not more:
            if firsts:
                lines = [self._t(s, "plan.first_heading")]
                lines += [f"• {self._advice_text(s, a, who, now)}" for a in firsts]
                sections.append("\n".join(lines))
            top = steps[:PLAN_TOP]
            if top:
                lines = [self._t(s, "plan.steps_heading")]
                lines += [f"{n}. {self._advice_text(s, a, who, now)}" for n, a in enumerate(top, 1)]
                sections.append("\n\n".join(lines))
            if len(steps) > PLAN_TOP or extra:
                sections.append(self._t(s, "plan.more_hint"))
            return "\n\n".join(sections)
        rest = steps[PLAN_TOP:] + extra
        if not rest:
            return self._t(s, "plan.no_more")
        lines = [f"• {self._advice_text(s, a, who, now)}" for a in rest]
        return "\n\n".join(lines)

    def _advice_text(
        self, s: Session, advice: Advice, who: str | None, now: datetime | None
    ) -> str:
        text = self._t(s, advice.text, who)
        if advice.route:
            route = self._route_line(s)
            if route:
                text = f"{text}\n   {route}"
        if advice.org:
            text = f"{text}\n   {self._org_block(s, advice.org, now)}"
        return text

    def _route_line(self, s: Session) -> str | None:
        platform = self.directory.platforms.get(s.answers.get("platform", ""))
        if platform is None:
            return None
        situation = s.answers.get("situation", "")
        # Sextortion is reported through the intimate-image route where no own route exists.
        route = platform.routes.get(situation) or platform.routes.get(
            "image_abuse" if situation == "sextortion" else ""
        )
        name = platform.name.get(s.lang)
        if route is None:
            # Another situation's route would point at the wrong form (e.g. intimate images).
            return self._t(s, "route.generic", platform=name)
        how = route.how.get(s.lang)
        line = self._t(s, "route.line", platform=name, how=how)
        if route.url:
            line = f"{line} {self._t(s, 'route.url', url=route.url)}"
        return line

    def organisation_text(self, lang: str, org_id: str, now: datetime | None = None) -> str:
        """One organisation's contact line exactly as the plan shows it (lesson, script)."""
        return self._org_block(Session(lang=lang), org_id, now)

    def _org_block(self, s: Session, org_id: str, now: datetime | None) -> str:
        org: Organisation | None = self.directory.organisations.get(org_id)
        if org is None:
            return ""
        parts: list[str] = []
        if org.phone and org.shows("phone"):
            key = "org.phone_free" if org.phone_free else "org.phone"
            phone = org.phone
            if org.phone_alt and org.shows("phone_alt"):
                phone = self._t(s, "org.phone_or", first=org.phone, second=org.phone_alt)
            parts.append(self._t(s, key, phone=phone))
        if org.whatsapp and org.shows("whatsapp"):
            parts.append(self._t(s, "org.whatsapp", number=org.whatsapp))
        if org.chat and org.shows("chat"):
            parts.append(self._t(s, "org.chat", site=org.chat))
        if parts:  # opening hours only matter for something you can call or chat with
            parts.append(self._hours_text(s, org, now))
        if org.web and org.chat != org.web and not any(org.web in p for p in parts):
            parts.append(self._t(s, "org.web", site=org.web))
        return self._t(s, "org.block", name=org.name, details=" · ".join(p for p in parts if p))

    def _hours_text(self, s: Session, org: Organisation, now: datetime | None) -> str:
        if not org.shows("hours") or org.hours.kind == "unknown":
            if org.hours.note and org.shows("hours"):
                return org.hours.note.get(s.lang)
            return self._t(s, "org.hours_unknown")
        if org.hours.kind == "always":
            return self._t(s, "org.always")
        note = org.hours.note.get(s.lang) if org.hours.note else None
        state = org.is_open(now) if now is not None else None
        status = {True: "org.open_now", False: "org.closed_now"}[state] if state is not None else (
            "org.hours_weekly"
        )
        text = self._t(s, status, hours=self._weekly(s, org))
        return f"{text} ({note})" if note else text

    def _weekly(self, s: Session, org: Organisation) -> str:
        spans = []
        for period in org.hours.weekly:
            days = self._t(s, "days.all") if len(period.days) == 7 else ", ".join(
                self._t(s, f"days.{d}") for d in period.days
            )
            spans.append(f"{days} {period.open}-{period.close}")
        return "; ".join(spans)

    def _start_payload(self, payload: str, s: Session) -> tuple[str, str]:
        word = payload.strip().lower()
        lang, mode = s.lang, "user"
        if word in LANGUAGES:
            lang = word
        elif word in self.flow.commands.get("volunteer_payloads", []):
            mode = "volunteer"
        elif word in self.flow.commands.get("lesson_payloads", []) and self.lesson is not None:
            mode = "lesson"
        return lang, mode

    # ------------------------------------------------------------------ letters
    def _letter_input(self, s: Session, step: Step, text: str, out: Outcome) -> None:
        """Web addresses, a name or an e-mail for one draft; kept only until it is made."""
        try:
            if step.free_text == "urls":
                parts = text.split()
                if len(parts) > letters.MAX_URLS:
                    raise letters.LetterInputError("too_many_urls")
                s.letter["urls"] = [letters.validate_url(part) for part in parts]
            elif step.free_text == "name":
                s.letter["name"] = letters.clean_text(text, letters.MAX_NAME_LEN)
            else:
                s.letter["email"] = letters.validate_email(text)
        except letters.LetterInputError as error:
            problem = letters.describe_error(error, s.lang)
            self._repeat(s, out, lead="letter.invalid", problem=problem)
            return
        following = resolve(step.next, s.answers) if step.next is not None else None
        self._goto(s, following or "plan", out, remember=True)

    def _is_minor(self, s: Session) -> bool:
        return s.answers.get("age") in MINOR_AGES

    def _letter_kind(self, s: Session, situation: str, platform: str | None) -> str:
        if platform == "google":
            wanted = "delist"
        elif situation == "doxing":
            wanted = "avg"
        else:
            wanted = "dsa"
        fitting = letters.kinds_for(situation, self._is_minor(s))
        return wanted if wanted in fitting else fitting[0]

    def _document_replies(self, s: Session, kind: str | None) -> list[Reply]:
        """Draft a letter or sheet from the answers; personal fields are dropped right after."""
        situation = s.answers.get("situation", "other")
        platform = s.answers.get("letter_platform") if kind is None else None
        personal, s.letter = s.letter, {}
        try:
            chosen = kind or self._letter_kind(s, situation, platform)
            request = letters.LetterRequest(
                kind=chosen,  # type: ignore[arg-type]
                situation=situation,
                lang=s.lang,
                platform=platform,
                urls=tuple(personal.get("urls", ())),
                name=personal.get("name"),
                email=personal.get("email"),
                minor=self._is_minor(s),
            )
            letter = letters.draft(request, self.directory)
        except letters.LetterInputError as error:
            problem = letters.describe_error(error, s.lang)
            return [Reply(self._t(s, "letter.invalid", problem=problem))]
        document = Document(letter.filename, f"{letter.title}\n\n{letter.body}")
        guide = "\n\n".join(
            [
                self._t(s, "letter.send_to_heading"),
                letter.send_to,
                self._t(s, "letter.next_heading"),
                letter.next_steps,
            ]
        )
        return [
            Reply(f"{letter.title}\n\n{letter.body}", document=document, kind="document"),
            Reply(guide),
        ]
