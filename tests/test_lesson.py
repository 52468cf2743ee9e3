"""Lesson mode: practice with made-up cases, feedback per answer, real help at the end,
and nothing left in the database once the lesson is over."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import Assistant, Knowledge
from bot.directory import Directory
from bot.engine import TriageEngine
from bot.errors import DataError
from bot.events import Incoming, Outcome
from bot.lesson import LESSONS_FILE, lesson_problems, load_lessons
from bot.session import LANGUAGES, Session
from bot.texts import Texts

ROOT = Path(__file__).resolve().parent.parent
LESSONS = load_lessons(ROOT / "data" / LESSONS_FILE)
REQUIRED_THEMES = ("group_chat", "video_call", "hate_account", "tracking_ex", "address_online")


def _text(outcome: Outcome) -> str:
    return "\n".join(reply.text for reply in outcome.replies)


def _labels(outcome: Outcome) -> list[str]:
    return [b.label for b in outcome.replies[-1].buttons] if outcome.replies else []


def _press(outcome: Outcome, choice: str) -> Incoming:
    for button in outcome.replies[-1].buttons:
        if button.data.rsplit(":", 1)[-1] == choice:
            return Incoming("button", button.data)
    shown = [b.data for b in outcome.replies[-1].buttons]
    raise AssertionError(f"no button {choice!r} on screen: {shown}")


def _rows_in_every_table(path: Path) -> int:
    """Counted straight from the file, so a table the store forgets still shows up."""
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return sum(db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables)


@pytest.fixture
def assistant(make_assistant: Callable[..., Assistant]) -> Assistant:
    return make_assistant()


@pytest.fixture
def texts(knowledge: Knowledge) -> Texts:
    return knowledge.texts


def _start(assistant: Assistant, key: str, lang: str = "nl") -> Outcome:
    outcome = assistant.handle(key, Incoming("command", "/start les"))
    if lang != "nl":
        outcome = assistant.handle(key, Incoming("command", f"/taal {lang}"))
    return outcome


def test_the_data_has_the_five_required_cases_and_each_teaches_both_ways() -> None:
    ids = [case.id for case in LESSONS.cases]
    assert set(REQUIRED_THEMES) <= set(ids)
    for case in LESSONS.cases:
        verdicts = {option.verdict for option in case.options}
        assert {"helps", "harms"} <= verdicts, case.id


@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_case_and_every_feedback_exists_in_each_language(texts: Texts, lang: str) -> None:
    other = next(code for code in LANGUAGES if code != lang)
    for case in LESSONS.cases:
        for key in (case.title, case.story):
            assert texts.has(key, lang), f"{key} missing in {lang}"
        for option in case.options:
            for key in (option.label, option.feedback):
                assert texts.has(key, lang), f"{key} missing in {lang}"
                text = texts.get(lang, key)
                assert text.strip(), key
                # A translation, not a copy of the other language.
                assert text != texts.get(other, key), f"{key} is the same in {lang} and {other}"


def test_lesson_data_is_consistent_with_texts_and_directory(knowledge: Knowledge) -> None:
    path = str(ROOT / "data" / LESSONS_FILE)
    assert lesson_problems(LESSONS, knowledge.texts, knowledge.directory, path) == []


def test_start_les_says_it_is_practice_and_offers_every_case(
    assistant: Assistant, texts: Texts
) -> None:
    outcome = _start(assistant, assistant.key_for("test", "pupil"))
    shown = _text(outcome)
    assert texts.get("nl", "lessons.intro") in shown
    assert "oefening" in shown and "geen echte" in shown
    labels = _labels(outcome)
    for case in LESSONS.cases:
        assert texts.get("nl", case.title) in labels
    assert not outcome.erase


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_answer_gets_its_own_feedback(
    assistant: Assistant, texts: Texts, lang: str
) -> None:
    key = assistant.key_for("test", f"pupil-{lang}")
    outcome = _start(assistant, key, lang)
    for case in LESSONS.cases:
        outcome = assistant.handle(key, _press(outcome, case.id))
        assert texts.get(lang, case.story) in _text(outcome)
        assert texts.get(lang, "lessons.ask") in _text(outcome)
        for option in case.options:
            outcome = assistant.handle(key, _press(outcome, option.id))
            shown = _text(outcome)
            assert texts.get(lang, option.feedback) in shown
            assert texts.get(lang, f"lessons.verdict.{option.verdict}") in shown
            outcome = assistant.handle(key, _press(outcome, "again"))
        outcome = assistant.handle(key, _press(outcome, "menu"))


def test_the_end_names_real_help_from_the_data_and_how_to_start_for_real(
    assistant: Assistant, texts: Texts, knowledge: Knowledge
) -> None:
    key = assistant.key_for("test", "pupil")
    outcome = _start(assistant, key)
    outcome = assistant.handle(key, _press(outcome, "end"))
    shown = _text(outcome)
    directory: Directory = knowledge.directory
    for org_id in ("helpwanted", "kindertelefoon", "zelfmoordpreventie_113"):
        org = directory.organisations[org_id]
        assert org.name in shown
        assert org.phone is not None and org.phone in shown
    assert texts.get("nl", "lessons.end.for_real") in shown
    assert "/start" in shown
    assert outcome.erase


def test_a_whole_lesson_leaves_no_rows_in_the_database(
    assistant: Assistant, tmp_path: Path
) -> None:
    db = tmp_path / "hw.sqlite3"
    key = assistant.key_for("test", "pupil")
    outcome = _start(assistant, key)
    assert _rows_in_every_table(db) > 0  # the lesson's place is kept while it runs
    for case in LESSONS.cases:
        outcome = assistant.handle(key, _press(outcome, case.id))
        outcome = assistant.handle(key, _press(outcome, case.options[0].id))
        outcome = assistant.handle(key, _press(outcome, "menu"))
    outcome = assistant.handle(key, Incoming("text", "dit is maar een oefening"))
    outcome = assistant.handle(key, _press(outcome, "end"))
    assert outcome.erase
    assert _rows_in_every_table(db) == 0


def test_next_story_walks_through_the_cases_not_yet_done(assistant: Assistant) -> None:
    key = assistant.key_for("test", "pupil")
    outcome = _start(assistant, key)
    first = LESSONS.cases[0]
    outcome = assistant.handle(key, _press(outcome, first.id))
    outcome = assistant.handle(key, _press(outcome, first.options[0].id))
    outcome = assistant.handle(key, _press(outcome, "next"))
    assert outcome.replies[-1].buttons[0].data.endswith(LESSONS.cases[1].options[0].id)


def test_stop_during_the_lesson_erases_everything(assistant: Assistant, tmp_path: Path) -> None:
    key = assistant.key_for("test", "pupil")
    outcome = _start(assistant, key)
    assistant.handle(key, _press(outcome, LESSONS.cases[0].id))
    outcome = assistant.handle(key, Incoming("command", "/stop"))
    assert outcome.erase
    assert _rows_in_every_table(tmp_path / "hw.sqlite3") == 0


def test_a_pupil_in_crisis_gets_real_help_not_practice(
    assistant: Assistant, texts: Texts
) -> None:
    key = assistant.key_for("test", "pupil")
    outcome = _start(assistant, key)
    outcome = assistant.handle(key, Incoming("text", "ik wil niet meer leven"))
    shown = _text(outcome)
    assert texts.get("nl", "lessons.handover") in shown
    assert texts.get("nl", "crisis.suicide") in shown
    assert "113" in shown
    session = assistant.store.load(key)
    assert session is not None and session.mode == "user" and session.step == "crisis_suicide"
    # From here on it is the normal conversation, not the lesson.
    outcome = assistant.handle(key, _press(outcome, "go_on"))
    assert texts.get("nl", "welcome.text", hours=24) in _text(outcome)


def test_typed_words_get_a_reminder_and_change_nothing(
    assistant: Assistant, texts: Texts
) -> None:
    key = assistant.key_for("test", "pupil")
    outcome = _start(assistant, key)
    outcome = assistant.handle(key, _press(outcome, LESSONS.cases[0].id))
    before = assistant.store.load(key)
    outcome = assistant.handle(key, Incoming("text", "ik heet Piet en woon in Utrecht"))
    assert texts.get("nl", "lessons.typed") in _text(outcome)
    after = assistant.store.load(key)
    assert before is not None and after is not None
    assert after.lesson["case"] == before.lesson["case"] and after.lesson["stage"] == "case"
    assert "Piet" not in after.to_json()


def test_a_typed_number_or_label_picks_that_answer(assistant: Assistant, texts: Texts) -> None:
    key = assistant.key_for("test", "pupil")
    case = LESSONS.cases[1]
    outcome = _start(assistant, key)
    outcome = assistant.handle(key, Incoming("text", "2"))
    assert texts.get("nl", case.story) in _text(outcome)
    option = case.options[-1]
    outcome = assistant.handle(key, Incoming("text", texts.get("nl", option.label).upper()))
    assert texts.get("nl", option.feedback) in _text(outcome)


def test_media_is_removed_and_old_buttons_do_nothing(assistant: Assistant, texts: Texts) -> None:
    key = assistant.key_for("test", "pupil")
    first = _start(assistant, key)
    assistant.handle(key, _press(first, LESSONS.cases[0].id))
    media = assistant.handle(key, Incoming("media"))
    assert media.delete_incoming
    assert texts.get("nl", "media.removed") in _text(media)
    stale = assistant.handle(key, _press(first, LESSONS.cases[2].id))
    assert texts.get("nl", "error.stale_button") in _text(stale)
    assert texts.get("nl", LESSONS.cases[0].story) in _text(stale)


def test_language_and_back_work_inside_the_lesson(assistant: Assistant, texts: Texts) -> None:
    key = assistant.key_for("test", "pupil")
    case = LESSONS.cases[0]
    outcome = _start(assistant, key)
    outcome = assistant.handle(key, _press(outcome, case.id))
    outcome = assistant.handle(key, _press(outcome, case.options[0].id))
    outcome = assistant.handle(key, Incoming("command", "/language en"))
    assert texts.get("en", case.options[0].feedback) in _text(outcome)
    outcome = assistant.handle(key, Incoming("command", "/back"))
    assert texts.get("en", case.story) in _text(outcome)
    outcome = assistant.handle(key, Incoming("command", "/help"))
    assert texts.get("en", "lessons.help") in _text(outcome)


def test_a_broken_lessons_file_names_the_file_and_the_problem(tmp_path: Path) -> None:
    path = tmp_path / LESSONS_FILE
    raw = (ROOT / "data" / LESSONS_FILE).read_text(encoding="utf-8")
    path.write_text(raw.replace("verdict: harms", "verdict: partly"), encoding="utf-8")
    with pytest.raises(DataError) as error:
        load_lessons(path)
    assert all(str(path) in problem for problem in error.value.problems)
    assert any("harms" in problem for problem in error.value.problems)


def test_a_missing_translation_is_reported(knowledge: Knowledge) -> None:
    english = dict(knowledge.texts.catalogues["en"])
    del english[LESSONS.cases[0].options[0].feedback]
    texts = Texts({"nl": knowledge.texts.catalogues["nl"], "en": english})
    problems = lesson_problems(LESSONS, texts, knowledge.directory, "data/lessons.yml")
    assert problems == [
        f"data/lessons.yml: case {LESSONS.cases[0].id}, option {LESSONS.cases[0].options[0].id}: "
        f"feedback: text key {LESSONS.cases[0].options[0].feedback} is missing in responses/en.yml"
    ]


def test_the_terminal_opens_the_lesson_with_mode_lesson(
    assistant: Assistant, texts: Texts
) -> None:
    import io

    from bot.channels import console

    stdout = io.StringIO()
    console.run(assistant, io.StringIO("1\n1\n"), stdout, lang="en", mode="lesson")
    shown = stdout.getvalue()
    assert texts.get("en", "lessons.intro") in shown
    assert texts.get("en", LESSONS.cases[0].story) in shown
    assert texts.get("en", LESSONS.cases[0].options[0].feedback) in shown


def test_hulpwijzer_check_reports_a_lesson_text_missing_in_a_language(tmp_path: Path) -> None:
    import shutil

    import yaml

    from bot.checks import check_all

    for folder in ("data", "responses"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    en_path = tmp_path / "responses" / "en.yml"
    en = yaml.safe_load(en_path.read_text(encoding="utf-8"))
    del en["lessons"]["video_call"]["pay"]["feedback"]
    en_path.write_text(yaml.safe_dump(en, allow_unicode=True), encoding="utf-8")
    problems = "\n".join(check_all(tmp_path))
    assert "lessons.yml" in problems and "lessons.video_call.pay.feedback" in problems


def test_random_lessons_never_break_and_end_with_nothing_kept(engine: TriageEngine) -> None:
    """Any mix of presses, typed text, media and commands after `/start les`: always an
    answer with buttons that fit Telegram, and a finished lesson leaves no session."""
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    events = st.one_of(
        st.tuples(st.just("press"), st.integers(0, 10)),
        st.tuples(st.just("text"), st.text(max_size=60)),
        st.tuples(st.just("text"), st.integers(-1, 12).map(str)),
        st.tuples(st.just("button"), st.text(max_size=70)),
        st.tuples(
            st.just("command"),
            st.sampled_from(["/help", "/terug", "/taal en", "/taal", "/opnieuw", "/privacy", "/x"]),
        ),
        st.tuples(st.just("media"), st.just("")),
    )

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(steps=st.lists(events, max_size=30))
    def run(steps: list[tuple[str, object]]) -> None:
        session, outcome = engine.step(None, Incoming("command", "/start les", now))
        assert session is not None and session.mode == "lesson"
        for kind, value in steps:
            buttons = outcome.replies[-1].buttons if outcome.replies else ()
            if kind == "press":
                if not buttons:
                    continue
                incoming = Incoming("button", buttons[int(str(value)) % len(buttons)].data, now)
            else:
                incoming = Incoming(kind, str(value), now)  # type: ignore[arg-type]
            session, outcome = engine.step(session, incoming)
            assert outcome.replies and all(r.text.strip() for r in outcome.replies)
            if session is None:
                assert outcome.erase
                return
            assert Session.from_json(session.to_json()) == session
            last = outcome.replies[-1]
            assert last.buttons
            assert all(len(b.data.encode()) <= 64 for b in last.buttons)

    run()


def test_typed_commands_work_in_the_lesson_as_in_every_channel(
    assistant: Assistant, texts: Texts, tmp_path: Path
) -> None:
    """Some channels send a typed "/start" as text; the lesson tells pupils to type it."""
    key = assistant.key_for("test", "pupil")
    _start(assistant, key)
    outcome = assistant.handle(key, Incoming("text", "/help"))
    assert texts.get("nl", "lessons.help") in _text(outcome)
    outcome = assistant.handle(key, Incoming("text", "/start"))
    assert texts.get("nl", "welcome.text", hours=24) in _text(outcome)
    session = assistant.store.load(key)
    assert session is not None and session.mode == "user" and session.lesson == {}
    outcome = assistant.handle(key, Incoming("text", "/start les"))
    assert texts.get("nl", "lessons.intro") in _text(outcome)
    outcome = assistant.handle(key, Incoming("text", "/stop"))
    assert outcome.erase
    assert _rows_in_every_table(tmp_path / "hw.sqlite3") == 0


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe not utf-8", b"- just\n- a list\n", b"cases: [", b"", b"real_help: 5\ncases: {}\n"],
)
def test_a_damaged_lessons_file_stops_start_up_with_a_data_error(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / LESSONS_FILE
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_lessons(path)
    assert error.value.problems and all(str(path) in p for p in error.value.problems)
