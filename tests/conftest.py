"""Shared fixtures: the real data files, a real SQLite file, a fixed clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.app import Assistant, Knowledge, load_knowledge
from bot.config import Settings, load_settings
from bot.engine import TriageEngine
from bot.lesson import load_lesson_mode
from bot.safety import default_rules
from bot.store import SQLiteSessionStore, session_cipher

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-" + "x" * 40
# A Monday at 13:00 in Amsterdam: the police callback line is open.
NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    settings = load_settings({"HULPWIJZER_SECRET": SECRET}, root=ROOT)
    return load_knowledge(settings)


@pytest.fixture(scope="session")
def engine(knowledge: Knowledge) -> TriageEngine:
    detect = default_rules().detect
    lesson = load_lesson_mode(
        ROOT / "data", knowledge.flow, knowledge.texts, knowledge.directory, detect
    )
    return TriageEngine(
        knowledge.flow, knowledge.texts, knowledge.directory, detect, lesson=lesson
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        {
            "HULPWIJZER_SECRET": SECRET,
            "HULPWIJZER_DB": str(tmp_path / "hw.sqlite3"),
            "HULPWIJZER_VAR": str(tmp_path / "var"),
            "NLU_BACKEND": "none",
        },
        root=ROOT,
    )


@pytest.fixture
def make_assistant(
    engine: TriageEngine, tmp_path: Path
) -> Callable[..., Assistant]:
    def build(classifier: object = None, clock: Callable[[], datetime] = lambda: NOON) -> Assistant:
        store = SQLiteSessionStore(tmp_path / "hw.sqlite3", session_cipher(SECRET))
        return Assistant(engine, store, SECRET, classifier, clock)  # type: ignore[arg-type]

    return build


@pytest.fixture(scope="session")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The real embedded classifier, trained once from nlu/ into a temporary cache."""
    from bot.nlu import EmbeddedClassifier

    model = EmbeddedClassifier.load_or_train(ROOT / "nlu", tmp_path_factory.mktemp("nlu-cache"))
    return model.parse
