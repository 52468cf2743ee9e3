"""The Assistant: the only thing channels call. Loads the session, asks the classifier,
runs the engine, saves or erases, and logs only event kinds and pseudonymous keys."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from bot.config import Settings
from bot.directory import Directory, load_directory
from bot.engine import EngineSettings, TriageEngine
from bot.errors import DataError
from bot.events import Incoming, Outcome, Parse
from bot.flow import Flow, load_flow
from bot.lesson import load_lesson_mode
from bot.letters import check_templates
from bot.safety import default_rules
from bot.store import SessionStore, SQLiteSessionStore, session_cipher, user_key
from bot.texts import Texts

log = logging.getLogger("hulpwijzer")
# Free text beyond this is not sent to a classifier (the safety rules still read all of it).
CLASSIFY_LIMIT = 2000


@dataclass(frozen=True)
class Knowledge:
    flow: Flow
    texts: Texts
    directory: Directory


def load_knowledge(settings: Settings) -> Knowledge:
    """Load every data file; collect all problems of all files before failing."""
    problems: list[str] = []
    flow = texts = directory = None
    try:
        flow = load_flow(settings.data_dir / "flow.yml")
    except DataError as error:
        problems += error.problems
    try:
        texts = Texts.load(settings.responses_dir)
    except DataError as error:
        problems += error.problems
    try:
        directory = load_directory(settings.data_dir)
    except DataError as error:
        problems += error.problems
    # Letter texts are read lazily when a draft is made; check them now so a broken file
    # stops start-up instead of the conversation of whoever first asks for a letter.
    problems += check_templates(settings.responses_dir / "letters")
    if problems or flow is None or texts is None or directory is None:
        raise DataError(problems)
    return Knowledge(flow, texts, directory)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Assistant:
    def __init__(
        self,
        engine: TriageEngine,
        store: SessionStore,
        secret: str,
        classifier: Callable[[str], Parse] | None = None,
        clock: Callable[[], datetime] = utcnow,
        ttl: timedelta = timedelta(hours=24),
    ) -> None:
        self.ttl = ttl
        self.engine = engine
        self.store = store
        self._secret = secret
        self._classify = classifier
        self._clock = clock

    @property
    def has_classifier(self) -> bool:
        """Whether a turn may wait on a classifier (a model, or Rasa over HTTP)."""
        return self._classify is not None

    def key_for(self, channel: str, user_id: str | int) -> str:
        return user_key(self._secret, channel, user_id)

    def handle(self, key: str, incoming: Incoming) -> Outcome:
        """One event for one person. Never raises for anything a user can send."""
        now = incoming.now or self._clock()
        incoming = replace(incoming, now=now)
        is_command = incoming.text.lstrip().startswith("/")
        if incoming.kind == "text" and self._classify and not is_command:
            try:
                parse = self._classify(incoming.text[:CLASSIFY_LIMIT])
                incoming = replace(incoming, parse=parse)
            except Exception as error:  # a broken classifier must not cost the conversation
                log.warning("classifier_failed kind=%s key=%s", type(error).__name__, key[:12])
        session = self.store.load(key)
        new_session, outcome = self.engine.step(session, incoming)
        if outcome.erase or new_session is None:
            self.store.delete(key)
            log.info("session_erased key=%s", key[:12])
        else:
            self.store.save(key, new_session, now)
            log.info("event kind=%s step=%s key=%s", incoming.kind, new_session.step, key[:12])
        return outcome

    def purge(self) -> int:
        """Delete sessions idle for longer than the TTL; returns how many."""
        return self.store.purge(self._clock() - self.ttl)


def build_assistant(settings: Settings, with_nlu: bool = True) -> Assistant:
    knowledge = load_knowledge(settings)
    engine_settings = EngineSettings(
        ttl_hours=max(1, round(settings.session_ttl.total_seconds() / 3600))
    )
    detect = default_rules().detect
    lesson = load_lesson_mode(
        settings.data_dir,
        knowledge.flow,
        knowledge.texts,
        knowledge.directory,
        detect,
        engine_settings,
    )
    engine = TriageEngine(
        knowledge.flow,
        knowledge.texts,
        knowledge.directory,
        detect,
        engine_settings,
        lesson=lesson,
    )
    store = SQLiteSessionStore(settings.db_path, session_cipher(settings.secret))
    classifier = None
    if with_nlu and settings.nlu_backend != "none":
        from bot.nlu import make_classifier

        model = make_classifier(
            backend=settings.nlu_backend,
            rasa_url=settings.rasa_url,
            nlu_dir=settings.nlu_dir,
            cache_dir=settings.var_dir,
        )
        classifier = model.parse
    assistant = Assistant(engine, store, settings.secret, classifier, ttl=settings.session_ttl)
    assistant.purge()
    return assistant
