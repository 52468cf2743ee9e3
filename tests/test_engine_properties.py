"""Random sequences of texts, numbers, commands and button data: the engine never raises,
always answers, and always ends on a real step with buttons a person can press."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.engine import TriageEngine
from bot.events import Incoming
from bot.session import Session

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
COMMANDS = [
    "/start", "/start en", "/start vrijwilliger", "/start les", "/start %%%", "/help", "/terug",
    "/back", "/opnieuw", "/taal", "/taal en", "/language xx", "/privacy", "/onbekend", "/",
    "/start@HulpwijzerBot en", "/TERUG",
]


def _events(engine: TriageEngine) -> st.SearchStrategy[tuple[str, object]]:
    options = sorted({o.id for step in engine.flow.steps.values() for o in step.options})
    steps = sorted(engine.flow.steps)
    return st.one_of(
        st.tuples(st.just("text"), st.text(max_size=300)),
        st.tuples(st.just("text"), st.integers(-3, 30).map(str)),
        st.tuples(st.just("command"), st.sampled_from(COMMANDS)),
        st.tuples(st.just("press"), st.integers(0, 20)),
        st.tuples(
            st.just("button"),
            st.one_of(
                st.text(max_size=80),
                st.builds(
                    lambda t, s, o: f"{t}:{s}:{o}",
                    st.integers(-1, 60),
                    st.sampled_from(steps),
                    st.sampled_from(options),
                ),
            ),
        ),
        st.tuples(st.just("media"), st.none()),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_conversations_never_break(engine: TriageEngine, data: st.DataObject) -> None:
    session: Session | None = None
    buttons: list[str] = []
    for kind, value in data.draw(st.lists(_events(engine), min_size=1, max_size=25)):
        if kind == "press":
            if not buttons:
                continue
            incoming = Incoming("button", buttons[int(value) % len(buttons)], NOW)  # type: ignore[call-overload]
        elif kind == "media":
            incoming = Incoming("media", "", NOW)
        else:
            incoming = Incoming(kind, str(value), NOW)  # type: ignore[arg-type]
        session, outcome = engine.step(session, incoming)
        assert outcome.replies, f"no answer to {incoming}"
        assert all(reply.text.strip() for reply in outcome.replies)
        if session is None:
            assert outcome.erase
            buttons = []
            continue
        assert session.step in engine.flow.steps
        last = outcome.replies[-1]
        assert last.buttons, f"the last reply at {session.step} offers nothing to press"
        assert all(len(b.data.encode()) <= 64 for b in last.buttons)
        buttons = [b.data for b in last.buttons]
        # The session survives a round trip through storage unchanged.
        assert Session.from_json(session.to_json()) == session


@settings(max_examples=100, deadline=None)
@given(text=st.text(min_size=1, max_size=200))
def test_a_text_never_changes_a_plan_answer_it_did_not_mean(
    engine: TriageEngine, text: str
) -> None:
    """At the age question, arbitrary text either picks an option or changes nothing."""
    session = Session(
        step="age", turn=4, answers={"who": "me"}, history=["welcome", "safety", "who"]
    )
    after, outcome = engine.step(session, Incoming("text", text, NOW))
    assert outcome.replies
    if after is None:
        return
    if after.step == "age":
        assert after.answers == session.answers
        assert after.history == session.history
