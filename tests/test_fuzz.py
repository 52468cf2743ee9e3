"""Bad input, measured: hostile Unicode, 100,000-character messages, forged and replayed
buttons, commands with odd payloads, junk for the letter fields, and broken data files.

Every input a person can send gets a clear answer and leaves their place as it was
unless it meant to move it; every broken data file stops start-up with a DataError that
names the file, never another exception. bench/fuzz_long.py runs the same properties
with many more examples (FUZZ_EXAMPLES); CI runs these short versions.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot import letters
from bot.app import Assistant, build_assistant
from bot.channels.telegram import CALLBACK_DATA_LIMIT, button_data
from bot.checks import check_all
from bot.config import load_settings
from bot.engine import MAX_TEXT_LENGTH, TriageEngine
from bot.errors import DataError
from bot.events import Incoming, Outcome
from bot.flow import load_flow
from bot.lesson import load_lessons
from bot.safety import CrisisRules
from bot.session import Session
from bot.texts import Texts

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
# Examples per property: small in CI, large in bench/fuzz_long.py.
SCALE = int(os.environ.get("FUZZ_EXAMPLES", "0") or 0)


def examples(ci: int, share: float = 1.0) -> int:
    """`ci` examples in CI; FUZZ_EXAMPLES (times `share` for slow properties) in bench."""
    return max(ci, int(SCALE * share))


FUZZ = settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------------- hostile text
RTL_AND_INVISIBLE = [
    "\u200e",
    "\u200f",
    "\u202a",
    "\u202b",
    "\u202c",
    "\u202d",
    "\u202e",
    "\u2066",
    "\u2067",
    "\u2068",
    "\u2069",
    "\u061c",
    "\u200b",
    "\u200c",
    "\u200d",
    "\u2060",
    "\ufeff",
    "\u00ad",
]
ODD = [
    "\u0000",
    "\r",
    "\n",
    "\t",
    "²",
    "٣",
    "１",
    "𝟗",
    "Ⅻ",
    "\ud800",
    "\udfff",
    "\uffff",
    "\U0010ffff",
    "ﷺ",
    "İ",
    "ß",
    "ǅ",
    "/",
    "@",
    ":",
    "{",
    "}",
    "\\",
    "'",
    '"',
    "😀",
    "\u0301",
]
PIECES = [
    "👩\u200d👩\u200d👧",
    "🏳️\u200d🌈",
    "🇳🇱",
    "\U0001f9d1\U0001f3fd",
    "{name}",
    "%s",
    "<b>",
    "&amp;",
    "..",
    "ja",
    "nee",
    "yes",
    "no",
    "1",
    "2",
    "3",
    "instagram",
    "naaktfoto",
    "chantage",
    "help",
    "ik",
    "word",
    "gepest",
    "someone",
    "posted",
    "my",
    "address",
    "nude",
    "/start",
    "/stop",
    "https://example.com/x",
    "a@b.nl",
]
CHARS = st.one_of(st.characters(), st.sampled_from(RTL_AND_INVISIBLE + ODD))


def hostile_text(max_size: int = 300) -> st.SearchStrategy[str]:
    """Unicode with RTL marks, zero-width characters, emoji, lone surrogates and words
    the bot knows, mixed."""
    mixed = st.lists(st.one_of(CHARS, st.sampled_from(PIECES), st.just(" ")), max_size=60)
    return st.one_of(st.text(CHARS, max_size=max_size), mixed.map("".join))


def huge_text() -> st.SearchStrategy[str]:
    """Messages of exactly 100,000 characters (Telegram allows 4,096; the web does not)."""
    return st.text(CHARS, min_size=1, max_size=20).map(
        lambda t: (t * (100_000 // len(t) + 1))[:100_000]
    )


# ---------------------------------------------------------------------- reachable places
@dataclass(frozen=True)
class Place:
    """A session at some step, as a real conversation left it."""

    session: Session


def _walk(engine: TriageEngine) -> dict[str, Session]:
    """One real session per reachable step: press every button breadth-first from /start
    in each mode and language, plus the places only text reaches (crisis, confirmation)."""
    found: dict[str, Session] = {}
    queue: list[tuple[Session, Outcome]] = []
    for start in ("/start", "/start en", "/start vrijwilliger", "/start les", "/taal"):
        session, outcome = engine.step(None, Incoming("command", start, NOW))
        assert session is not None
        queue.append((session, outcome))
    for text in ("ik wil dood", "er staat iemand voor de deur die me wil slaan"):
        session, outcome = engine.step(queue[0][0], Incoming("text", text, NOW))
        assert session is not None
        queue.append((session, outcome))
    seen_steps: set[tuple[str, str, str, str]] = set()
    while queue:
        session, outcome = queue.pop(0)
        answers = session.answers
        marker = (session.step, session.mode, answers.get("situation", ""), answers.get("age", ""))
        if marker in seen_steps:
            continue
        seen_steps.add(marker)
        found.setdefault(f"{session.step}/{session.mode}/{session.lang}", session)
        for button in outcome.replies[-1].buttons:
            after, next_outcome = engine.step(session, Incoming("button", button.data, NOW))
            if after is not None:
                queue.append((after, next_outcome))
    return found


@pytest.fixture(scope="module")
def places(engine: TriageEngine) -> list[Session]:
    found = _walk(engine)
    # Every step of the graph a person can reach by buttons is covered (letters included).
    assert {"plan", "letter_urls", "letter_name", "letter_email"} <= {
        p.split("/")[0] for p in found
    }
    return [found[name] for name in sorted(found)]


def _check_answer(engine: TriageEngine, after: Session | None, outcome: Outcome) -> None:
    """What any answer must look like: something to read, and (unless everything was
    erased) a current question with buttons, in a state that survives storage."""
    assert outcome.replies, "no answer"
    assert all(reply.text.strip() for reply in outcome.replies), "an empty message"
    if after is None:
        assert outcome.erase
        return
    assert after.step in engine.flow.steps or after.mode == "lesson"
    assert outcome.replies[-1].buttons, "nothing to press after the answer"
    assert all(len(b.data.encode()) <= CALLBACK_DATA_LIMIT for b in outcome.replies[-1].buttons)
    stored = after.to_json()
    stored.encode("utf-8")  # a lone surrogate in the state would crash the store
    assert Session.from_json(stored) == after


def _same_place(before: Session, after: Session | None) -> None:
    assert after is not None
    assert (after.step, after.answers, after.history, after.lang, after.mode, after.letter) == (
        before.step,
        before.answers,
        before.history,
        before.lang,
        before.mode,
        before.letter,
    )


# ---------------------------------------------------------------------- the engine
@FUZZ
@given(data=st.data(), text=st.one_of(hostile_text(), huge_text()))
def test_any_text_at_any_step_gets_a_clear_answer(
    engine: TriageEngine, places: list[Session], data: st.DataObject, text: str
) -> None:
    before = data.draw(st.sampled_from(places))
    after, outcome = engine.step(before, Incoming("text", text, NOW))
    _check_answer(engine, after, outcome)
    crisis = engine.detect_crisis(text) is not None
    command = text.lstrip().startswith("/")  # a command, however long, is a command
    if not crisis and not command and (len(text) > MAX_TEXT_LENGTH or not text.strip()):
        # Too long or empty: said why, asked again, nothing else changed.
        lead = "error.too_long" if text.strip() else "error.empty"
        expected = engine.texts.get(before.lang, lead, limit=MAX_TEXT_LENGTH)
        assert outcome.replies[0].text == expected
        _same_place(before, after)
    if crisis and before.mode != "lesson":
        assert after is not None and after.step in ("crisis_suicide", "crisis_danger")


@FUZZ
@given(data=st.data(), texts=st.lists(hostile_text(80), min_size=1, max_size=8))
def test_a_first_message_of_any_kind_starts_a_conversation(
    engine: TriageEngine, data: st.DataObject, texts: list[str]
) -> None:
    session: Session | None = None
    for text in texts:
        kind = data.draw(st.sampled_from(["text", "button", "media", "command"]))
        session, outcome = engine.step(session, Incoming(kind, text, NOW))  # type: ignore[arg-type]
        _check_answer(engine, session, outcome)


# ---------------------------------------------------------------------- buttons
FORGED = st.one_of(
    hostile_text(100),
    st.text(st.characters(codec="ascii"), max_size=80),
    st.builds(
        lambda t, s, o: f"{t}:{s}:{o}",
        st.one_of(st.integers(-5, 10**7), st.text(max_size=3)),
        st.text(st.characters(codec="ascii"), max_size=34),
        st.text(st.characters(codec="ascii"), max_size=26),
    ),
)


@FUZZ
@given(data=st.data(), forged=FORGED)
def test_forged_button_data_changes_nothing(
    engine: TriageEngine, places: list[Session], data: st.DataObject, forged: str
) -> None:
    before = data.draw(st.sampled_from(places))
    assume(before.mode != "lesson")
    valid = {
        b.data
        for b in engine.step(before, Incoming("command", "/help", NOW))[1].replies[-1].buttons
    }
    current = f"{before.turn}:{before.step}:"
    assume(not forged.strip().startswith(current) and forged.strip() not in valid)
    after, outcome = engine.step(before, Incoming("button", forged, NOW))
    _check_answer(engine, after, outcome)
    assert outcome.replies[0].text == engine.texts.get(before.lang, "error.stale_button")
    _same_place(before, after)


@FUZZ
@given(data=st.data())
def test_replayed_buttons_change_nothing(engine: TriageEngine, data: st.DataObject) -> None:
    """Press real buttons for a while, then press one of the earlier ones again (an old
    message, a double tap, a replayed request): unless it belongs to the question asked
    now (an earlier copy of the same question means the same), it is 'no longer valid'."""
    session, outcome = engine.step(None, Incoming("command", "/start", NOW))
    pressed: list[str] = []
    for _ in range(data.draw(st.integers(1, 12))):
        assert session is not None
        buttons = outcome.replies[-1].buttons
        button = data.draw(st.sampled_from(buttons))
        pressed.append(button.data)
        session, outcome = engine.step(session, Incoming("button", button.data, NOW))
        if session is None:
            return
    assert session is not None
    replay = data.draw(st.sampled_from(pressed))
    after, outcome = engine.step(session, Incoming("button", replay, NOW))
    _check_answer(engine, after, outcome)
    if replay.split(":")[1] == session.step:
        assert outcome.replies[0].text != engine.texts.get(session.lang, "error.stale_button")
        return
    assert outcome.replies[0].text == engine.texts.get(session.lang, "error.stale_button")
    _same_place(session, after)


def test_go_on_after_asking_for_a_person_returns_to_the_question(engine: TriageEngine) -> None:
    """Found by the replay property: 'talk to a person' from a question, then 'go on',
    restarted the conversation at the language question."""
    session, outcome = engine.step(None, Incoming("command", "/start", NOW))
    for option in ("nl", "no", "humans", "go_on"):
        data = next(b.data for b in outcome.replies[-1].buttons if b.data.endswith(f":{option}"))
        session, outcome = engine.step(session, Incoming("button", data, NOW))
    assert session is not None and session.step == "danger"
    assert session.answers == {"safe": "no"}


@FUZZ
@given(raw=st.one_of(st.none(), hostile_text(200), st.text(max_size=200), huge_text()))
def test_telegram_callback_decoder_passes_only_what_our_buttons_can_be(raw: str | None) -> None:
    decoded = button_data(raw)
    assert decoded in ("", raw)
    if decoded:
        assert len(decoded.encode()) <= CALLBACK_DATA_LIMIT
        assert decoded.isascii() and decoded.isprintable()


# ---------------------------------------------------------------------- commands
def _command_names(engine: TriageEngine) -> list[str]:
    names = [n for key, v in engine.flow.commands.items() for n in v if n.startswith("/")]
    return [*names, "/", "/x", "/START", "/Taal", "/start@HulpwijzerBot", "/start@", "/@"]


@FUZZ
@given(data=st.data(), payload=st.one_of(hostile_text(120), huge_text()), as_text=st.booleans())
def test_commands_with_odd_payloads_get_a_clear_answer(
    engine: TriageEngine,
    places: list[Session],
    data: st.DataObject,
    payload: str,
    as_text: bool,
) -> None:
    name = data.draw(st.sampled_from(_command_names(engine)))
    before = data.draw(st.sampled_from(places))
    text = f"{name} {payload}"
    after, outcome = engine.step(before, Incoming("text" if as_text else "command", text, NOW))
    _check_answer(engine, after, outcome)
    action = engine._aliases.get(name.split("@")[0].lower())
    word = payload.strip().lower()
    known = {"nl", "en", *engine.flow.commands["volunteer_payloads"]}
    known |= set(engine.flow.commands["lesson_payloads"])
    if action == "start" and word not in known:
        # An unknown payload starts the normal conversation from the beginning.
        assert after is not None and after.mode == "user" and after.answers == {}
        assert after.step == engine.flow.start
    if action in ("stop", "wipe"):
        assert after is None and outcome.erase
    if action is None and before.mode != "lesson":
        assert outcome.replies[0].text == engine.texts.get(before.lang, "error.unknown_command")
        _same_place(before, after)


# ---------------------------------------------------------------------- letters
@FUZZ
@given(value=st.one_of(hostile_text(300), huge_text(), st.text(max_size=2100)))
def test_letter_validators_accept_clean_values_or_refuse_with_a_reason(value: str) -> None:
    for check in (
        letters.validate_url,
        letters.validate_email,
        lambda v: letters.clean_text(v, letters.MAX_NAME_LEN),
    ):
        try:
            cleaned = check(value)
        except letters.LetterInputError as error:
            # The reason is a known key with a sentence in both languages, never the input.
            assert letters.describe_error(error, "nl") and letters.describe_error(error, "en")
            assert str(error).split(" in ")[0] == f"letter input rejected: {error.key}"
            continue
        assert not any(letters._is_hidden_control(c) for c in cleaned)
        assert len(cleaned) <= max(letters.MAX_URL_LEN, letters.MAX_EMAIL_LEN, letters.MAX_NAME_LEN)
        assert check(cleaned) == cleaned  # cleaning twice changes nothing


URLISH = st.builds(
    lambda scheme, host, path: f"{scheme}{host}{path}",
    st.sampled_from(
        ["https://", "http://", "HTTPS://", "javascript:", "data:", "file://", "//", ""]
    ),
    st.one_of(
        st.sampled_from(
            ["example.com", "x.nl", "127.0.0.1", "[::1]", "a@b.nl", "xn--bcher-kva.de"]
        ),
        hostile_text(30),
    ),
    st.one_of(st.just(""), hostile_text(40).map(lambda p: "/" + p)),
)


@FUZZ
@given(data=st.data(), value=st.one_of(URLISH, hostile_text(120), huge_text()))
def test_letter_fields_in_the_chat_take_a_value_or_explain(
    engine: TriageEngine, places: list[Session], data: st.DataObject, value: str
) -> None:
    letter_places = [p for p in places if p.step in ("letter_urls", "letter_name", "letter_email")]
    before = data.draw(st.sampled_from(letter_places))
    after, outcome = engine.step(before, Incoming("text", value, NOW))
    _check_answer(engine, after, outcome)
    if after is None:  # a typed /stop is a command wherever it is typed
        assert outcome.erase and value.lstrip().lower().startswith("/")
        return
    if after.step == before.step and engine.detect_crisis(value) is None:
        # Refused: the reason, the question again, nothing stored from the value.
        _same_place(before, after)
    for stored in after.letter.values():
        for item in stored if isinstance(stored, list) else [stored]:
            assert not any(letters._is_hidden_control(c) for c in item)


# ---------------------------------------------------------------------- stored sessions
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
SESSION_FIELDS = list(Session.__dataclass_fields__)


@FUZZ
@given(
    fields=st.dictionaries(st.sampled_from(SESSION_FIELDS), JSONISH, max_size=6),
    command=st.sampled_from(["text", "button", "/terug", "/help", "/taal en"]),
)
def test_a_stored_session_that_makes_no_sense_starts_over(
    engine: TriageEngine, fields: dict[str, Any], command: str
) -> None:
    """State written by an older version (or damaged) is either refused on load, which
    the store treats as 'start again', or usable: never a crash in the next turn."""
    try:
        session = Session.from_json(json.dumps(fields))
    except (ValueError, TypeError):
        return
    kind = "command" if command.startswith("/") else command
    after, outcome = engine.step(session, Incoming(kind, command, NOW))  # type: ignore[arg-type]
    _check_answer(engine, after, outcome)


# ---------------------------------------------------------------------- the Assistant
@settings(max_examples=examples(40), deadline=None, suppress_health_check=list(HealthCheck))
@given(texts=st.lists(st.one_of(hostile_text(200), huge_text()), min_size=1, max_size=4))
def test_the_assistant_with_classifier_and_store_answers_everything(
    make_assistant: Callable[..., Assistant], classifier: object, texts: list[str]
) -> None:
    assistant = make_assistant(classifier)
    key = assistant.key_for("fuzz", "someone")
    assistant.handle(key, Incoming("command", "/start"))
    for text in texts:
        outcome = assistant.handle(key, Incoming("text", text))
        assert outcome.replies and all(r.text.strip() for r in outcome.replies)
        session = assistant.store.load(key)
        assert session is not None and session.step in assistant.engine.flow.steps
    assistant.store.delete(key)


# ---------------------------------------------------------------------- data files
DATA_FILES = [
    "data/flow.yml",
    "data/organisations.yml",
    "data/platforms.yml",
    "data/laws.yml",
    "data/lessons.yml",
    "data/crisis_rules.yml",
    "responses/nl.yml",
    "responses/en.yml",
    "responses/letters/nl.yml",
    "responses/letters/en.yml",
]
BROKEN: dict[str, bytes] = {
    "not UTF-8": b"\xff\xfe\x00 steps: {}",
    "latin-1": "start: caf\u00e9\n".encode("latin-1"),
    "empty": b"",
    "null": b"~\n",
    "a number": b"42\n",
    "a list": b"- 1\n- 2\n",
    "text": b"just some words\n",
    "tab indent": b"a:\n\tb: 1\n",
    "unclosed": b"a: [1, 2\n",
    "duplicate keys": b"a: 1\na: 2\n",
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    "self-reference": b"a: &x\n  b: *x\n",
    "list key": b"1: a\n? [1]\n: b\n",
    "python tag": b"!!python/object/apply:os.system ['echo pwned']\n",
    "binary tag": b"!!binary aGVsbG8=\n",
    "byte-order mark only": "\ufeff".encode(),
}


def _load_one(root: Path, name: str) -> list[str]:
    """What start-up does with this file: the problems it reports (empty: it loaded)."""
    path = root / name
    try:
        if name == "data/flow.yml":
            load_flow(path)
        elif name == "data/lessons.yml":
            load_lessons(path)
        elif name == "data/crisis_rules.yml":
            CrisisRules.load(path)
        elif name.startswith("responses/letters/"):
            letters._catalogue.cache_clear()
            return letters.check_templates(path.parent)
        elif name.startswith("responses/"):
            Texts.load(path.parent)
        else:
            from bot.directory import load_directory

            load_directory(path.parent)
    except DataError as error:
        return error.problems
    return []


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of data/ and responses/ that tests may break and then restore."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(ROOT / "data", root / "data")
    shutil.copytree(ROOT / "responses", root / "responses")
    return root


@pytest.fixture
def broken(tree: Path) -> Iterator[Callable[[str, bytes | None], Path]]:
    """Replace one file (None: delete it); restored afterwards."""
    originals: dict[str, bytes] = {}

    def replace(name: str, content: bytes | None) -> Path:
        for earlier, original in originals.items():  # one damaged file at a time
            (tree / earlier).write_bytes(original)
        path = tree / name
        originals.setdefault(name, (ROOT / name).read_bytes())
        if content is None:
            path.unlink()
        else:
            path.write_bytes(content)
        return tree

    yield replace
    for name, content in originals.items():
        (tree / name).write_bytes(content)
    letters._catalogue.cache_clear()


def _names_file(problems: list[str], name: str) -> bool:
    shown = name.removeprefix("responses/") if "letters" in name else Path(name).name
    return any(shown in problem for problem in problems)


@pytest.mark.parametrize("name", DATA_FILES)
def test_every_data_file_broken_in_every_way_gives_a_data_error_naming_it(
    broken: Callable[[str, bytes | None], Path], name: str
) -> None:
    failures = []
    for label, content in [*BROKEN.items(), ("deleted", None)]:
        root = broken(name, content)
        try:
            problems = _load_one(root, name)
        except Exception as error:  # the point of the test: nothing but DataError
            failures.append(f"{label}: {type(error).__name__}: {error}"[:200])
            continue
        if not problems:
            failures.append(f"{label}: loaded without a complaint")
        elif not _names_file(problems, name):
            failures.append(f"{label}: problems do not name the file: {problems[:2]}")
    assert not failures, "\n".join(failures)


VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True),
        hostile_text(30).filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)),
        st.sampled_from(["", "welcome", "plan", "{x}", "{", "nl", "https://x.nl", "24:00"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _mutate(original: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    if not path:
        return value
    copy = deepcopy(original)
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return copy


@st.composite
def damaged_file(draw: st.DrawFn) -> tuple[str, bytes]:
    """One data file, damaged the way an editor might: a value of the wrong shape at any
    place, a key deleted, the file cut short, bytes inserted, or replaced wholesale."""
    name = draw(st.sampled_from(DATA_FILES))
    text = (ROOT / name).read_text(encoding="utf-8")
    how = draw(st.sampled_from(["value", "delete", "truncate", "bytes", "whole"]))
    if how in ("value", "delete"):
        original = yaml.safe_load(text)
        paths = list(_paths(original))
        path = draw(st.sampled_from(paths[1:] if how == "delete" else paths))
        value = draw(VALUES)
        mutated = _mutate(original, path, value, delete=how == "delete")
        return name, yaml.safe_dump(mutated, allow_unicode=True).encode("utf-8")
    raw = text.encode("utf-8")
    if how == "truncate":
        return name, raw[: draw(st.integers(0, len(raw)))]
    if how == "bytes":
        at = draw(st.integers(0, len(raw)))
        return name, raw[:at] + draw(st.binary(min_size=1, max_size=8)) + raw[at:]
    whole = draw(VALUES)
    return name, yaml.safe_dump(whole, allow_unicode=True).encode("utf-8")


def _press_through(assistant: Assistant) -> None:
    """A short conversation on the damaged data: first buttons, a text, a command."""
    key = assistant.key_for("fuzz", "data")
    outcome = assistant.handle(key, Incoming("command", "/start", NOW))
    for step in range(12):
        assert outcome.replies and outcome.replies[-1].buttons
        buttons = outcome.replies[-1].buttons
        outcome = assistant.handle(key, Incoming("button", buttons[step % len(buttons)].data, NOW))
    assistant.handle(key, Incoming("text", "iemand heeft mijn foto gedeeld", NOW))
    assistant.handle(key, Incoming("command", "/privacy", NOW))


@settings(
    max_examples=examples(25, share=0.1), deadline=None, suppress_health_check=list(HealthCheck)
)
@given(damage=damaged_file())
def test_damaged_data_stops_start_up_with_a_data_error_or_works(
    broken: Callable[[str, bytes | None], Path], damage: tuple[str, bytes]
) -> None:
    """Start-up and `hulpwijzer check` agree; a failure is a DataError naming files; a
    start-up that succeeds runs a conversation without an exception."""
    name, content = damage
    root = broken(name, content)
    env = {
        "HULPWIJZER_SECRET": "fuzz-secret-" + "f" * 40,
        "HULPWIJZER_VAR": str(root / "var"),
        "HULPWIJZER_DB": ":memory:",
        "NLU_BACKEND": "none",
    }
    problems = check_all(root)
    assert isinstance(problems, list)
    own = _load_one(root, name)
    try:
        if name == "data/crisis_rules.yml" and own:
            raise DataError(own)  # start-up reads the shipped rules; this is their loader
        assistant = build_assistant(load_settings(env, root=root), with_nlu=False)
    except DataError as error:
        assert error.problems
        assert all(".yml" in p or "letters" in p for p in error.problems), error.problems
        assert problems, "start-up failed but `hulpwijzer check` found nothing"
        return
    finally:
        letters._catalogue.cache_clear()
    assert not own, f"start-up accepted {name} although its loader reports {own[:2]}"
    _press_through(assistant)
