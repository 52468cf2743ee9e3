"""NLU: Rasa-format loading, entities, the model cache, commands, the safety union, the Rasa
adapter against a fake server, evaluation, the CLI functions, and the real-data quality gate."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import nlu
from bot.errors import DataError
from bot.events import Parse
from bot.nlu import (
    CRISIS_THRESHOLD,
    PLATFORMS,
    EmbeddedClassifier,
    EntityExtractor,
    LinearScorer,
    NoClassifier,
    RasaClassifier,
    cmd_nlu_classify,
    cmd_nlu_eval,
    cmd_nlu_train,
    crisis_rule,
    decide,
    evaluate,
    final_intent,
    fit_pipeline,
    load_training_data,
    make_classifier,
    normalise,
    parse_message,
    strip_annotations,
)

FIXTURE = Path(__file__).parent / "data" / "nlu_fixture"
ROOT = Path(__file__).resolve().parent.parent
REAL_NLU = ROOT / "nlu"

SITUATIONS = (
    "image_abuse", "sextortion", "bullying", "stalking", "doxing", "threat", "impersonation",
)  # fmt: skip


class FixedClassifier:
    """Always answers the same, and records what it was asked."""

    def __init__(self, intent: str, confidence: float) -> None:
        self.answer = Parse(intent, confidence)
        self.seen: list[str] = []

    def parse(self, text: str) -> Parse:
        self.seen.append(text)
        return self.answer


@pytest.fixture(scope="module")
def fixture_model(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedClassifier:
    return EmbeddedClassifier.load_or_train(FIXTURE, tmp_path_factory.mktemp("cache"))


@pytest.fixture
def nlu_copy(tmp_path: Path) -> Path:
    target = tmp_path / "nlu"
    shutil.copytree(FIXTURE, target)
    return target


# ------------------------------------------------------------------------- Rasa format


def test_fixture_loads_with_annotations_stripped_and_synonyms_applied() -> None:
    data = load_training_data(FIXTURE / "data")
    texts = {example.text: example for example in data.examples}
    insta = texts["iemand heeft een naaktfoto van mij op insta gezet"]
    assert insta.intent == "image_abuse"
    assert insta.entities == (("platform", "instagram"),)  # [insta](platform) + synonym
    snap = texts["mijn foto's worden rondgestuurd op snap"]
    assert snap.entities == (("platform", "snapchat"),)  # {"value": "snapchat"} override
    assert texts["someone shared naked pics of me on twitter"].entities == (("platform", "x"),)
    assert not any("[" in text or "](" in text for text in texts)
    assert data.synonyms["insta"] == "instagram"
    assert data.synonyms["twitter"] == "x"
    assert "tiktok" in data.lookups["platform"]
    assert {"crisis_suicide", "crisis_danger", "greet"} <= set(data.intents)
    assert len(data.files) == 2


@pytest.mark.parametrize(
    ("line", "text", "entities"),
    [
        ("plain text", "plain text", ()),
        ("op [insta](platform) gezet", "op insta gezet", (("platform", "insta"),)),
        ("op [twitter](platform:x)", "op twitter", (("platform", "x"),)),
        (
            '[snap]{"entity": "platform", "value": "snapchat"} en [15](age)',
            "snap en 15",
            (("platform", "snapchat"), ("age", "15")),
        ),
        (
            '[mijn adres]{"entity": "detail", "role": "home"}',
            "mijn adres",
            (("detail", "mijn adres"),),
        ),
    ],
)
def test_strip_annotations(line: str, text: str, entities: tuple[tuple[str, str], ...]) -> None:
    assert strip_annotations(line) == (text, entities)


def test_examples_as_list_of_text_mappings(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(
        'version: "3.1"\nnlu:\n- intent: greet\n  examples:\n  - text: hoi\n  - text: hallo\n',
        encoding="utf-8",
    )
    assert [e.text for e in load_training_data(tmp_path).examples] == ["hoi", "hallo"]


def test_malformed_files_raise_one_data_error_naming_each_file(tmp_path: Path) -> None:
    shutil.copy(FIXTURE / "data" / "nl.yml", tmp_path / "good.yml")
    (tmp_path / "broken_yaml.yml").write_text("nlu:\n- intent: greet\n  examples: |\n - [", "utf-8")
    (tmp_path / "no_intent.yml").write_text("nlu:\n- examples: |\n    - hoi\n", "utf-8")
    (tmp_path / "bad_line.yml").write_text(
        "nlu:\n- intent: greet\n  examples: |\n    - hoi\n    hallo zonder streepje\n", "utf-8"
    )
    (tmp_path / "bad_json.yml").write_text(
        'nlu:\n- intent: greet\n  examples: |\n    - op [insta]{"entity": platform}\n', "utf-8"
    )
    (tmp_path / "not_a_list.yml").write_text("nlu: hallo\n", "utf-8")
    with pytest.raises(DataError) as caught:
        load_training_data(tmp_path)
    problems = caught.value.problems
    for name in ("broken_yaml.yml", "no_intent.yml", "bad_line.yml", "bad_json.yml"):
        assert any(name in problem for problem in problems), (name, problems)
    assert any("not_a_list.yml" in p and "list" in p for p in problems)
    assert not any("good.yml" in problem for problem in problems)
    assert any("hallo zonder streepje" in p for p in problems)


def test_empty_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no \.yml files"):
        load_training_data(tmp_path)


def test_training_on_broken_data_fails_with_data_error(nlu_copy: Path, tmp_path: Path) -> None:
    (nlu_copy / "data" / "nl.yml").write_text("nlu:\n- intent: greet\n  examples: 3\n", "utf-8")
    with pytest.raises(DataError, match=r"nl\.yml"):
        EmbeddedClassifier.load_or_train(nlu_copy, tmp_path / "cache")


# ------------------------------------------------------------------------- entities


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hij heeft het op insta gezet", [("platform", "instagram")]),
        ("Het staat op INSTA én op Snap", [("platform", "instagram"), ("platform", "snapchat")]),
        ("mijn snap is gehackt", [("platform", "snapchat")]),
        ("ik snap het niet", []),
        ("ik snap er niks van", []),
        ("someone posted it on twitter", [("platform", "x")]),
        ("het staat op x", [("platform", "x")]),
        ("it's on X now", [("platform", "x")]),
        ("ik heb het x keer gezegd", []),
        ("x", []),
        ("tiktokker", []),
        ("zie https://example.com/a?b=1.", [("url", "https://example.com/a?b=1")]),
        ("het staat op example.com/abc", [("url", "example.com/abc")]),
        (
            "kijk www.tiktok.com/@nep",
            [("url", "www.tiktok.com/@nep"), ("platform", "tiktok")],
        ),
        ("mail me via iemand@example.com", []),
        ("ik ben 15", [("age", "15")]),
        ("mijn dochter van 14 wordt gechanteerd", [("age", "14")]),
        ("ze is 13 jaar", [("age", "13")]),
        ("I'm 15 and scared", [("age", "15")]),
        ("my son is 16 years old", [("age", "16")]),
        ("ik ben 15 euro kwijt", []),
        ("dat was 10 jaar geleden", []),
        ("ik ben 5", []),
        ("ik ben 150", []),
    ],
)
def test_entities(
    fixture_model: EmbeddedClassifier, text: str, expected: list[tuple[str, str]]
) -> None:
    assert list(fixture_model.parse(text).entities) == expected


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_entity_extraction_never_fails_and_stays_in_range(text: str) -> None:
    extractor = EntityExtractor({name: name for name in PLATFORMS} | {"insta": "instagram"})
    for entity, value in extractor.extract(text):
        assert entity in ("platform", "url", "age")
        if entity == "platform":
            assert value in PLATFORMS
        if entity == "age":
            assert 8 <= int(value) <= 99


def test_normalise_folds_case_accents_repeats_and_urls() -> None:
    assert normalise("HEEEELP  Één https://x.com/a") == "heelp een urltoken"


# ------------------------------------------------------------------------- cache


def test_cache_loads_without_retraining_and_is_private(nlu_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = EmbeddedClassifier.load_or_train(nlu_copy, cache)
    assert not first.from_cache
    [cached] = cache.glob("nlu-*.npz")
    assert cached.stat().st_mode & 0o777 == 0o600
    assert not list(cache.glob(".nlu-*"))  # no temp files left behind
    mtime = cached.stat().st_mtime_ns
    second = EmbeddedClassifier.load_or_train(nlu_copy, cache)
    assert second.from_cache
    assert cached.stat().st_mtime_ns == mtime
    assert second.parse("ik wil dood") == first.parse("ik wil dood")


def test_changing_a_data_file_retrains_and_replaces_the_cache(
    nlu_copy: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    EmbeddedClassifier.load_or_train(nlu_copy, cache)
    [old] = cache.glob("nlu-*.npz")
    with (nlu_copy / "data" / "en.yml").open("a", encoding="utf-8") as handle:
        handle.write("- intent: goodbye\n  examples: |\n    - bye\n    - thanks, bye\n")
    retrained = EmbeddedClassifier.load_or_train(nlu_copy, cache)
    assert not retrained.from_cache
    assert not old.exists()
    assert len(list(cache.glob("nlu-*.npz"))) == 1
    assert EmbeddedClassifier.load_or_train(nlu_copy, cache).from_cache


def test_corrupt_cache_retrains(nlu_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    EmbeddedClassifier.load_or_train(nlu_copy, cache)
    [cached] = cache.glob("nlu-*.npz")
    cached.write_bytes(b"not an npz archive at all")
    again = EmbeddedClassifier.load_or_train(nlu_copy, cache)
    assert not again.from_cache
    assert again.parse("hoi").intent == "greet"
    assert EmbeddedClassifier.load_or_train(nlu_copy, cache).from_cache


def test_a_cache_for_other_data_is_not_used(nlu_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    EmbeddedClassifier.load_or_train(nlu_copy, cache)
    [cached] = cache.glob("nlu-*.npz")
    other = tmp_path / "other"
    shutil.copytree(FIXTURE, other)
    with (other / "data" / "nl.yml").open("a", encoding="utf-8") as handle:
        handle.write("- intent: goodbye\n  examples: |\n    - doei\n    - dag\n")
    EmbeddedClassifier.load_or_train(other, tmp_path / "other-cache")
    [foreign] = (tmp_path / "other-cache").glob("nlu-*.npz")
    shutil.copy(foreign, cached)  # right name, wrong contents
    assert not EmbeddedClassifier.load_or_train(nlu_copy, cache).from_cache


def test_a_cached_model_loads_without_scikit_learn(nlu_copy: Path, tmp_path: Path) -> None:
    EmbeddedClassifier.load_or_train(nlu_copy, tmp_path / "cache")
    script = (
        "import sys; from pathlib import Path; from bot.nlu import EmbeddedClassifier\n"
        "m = EmbeddedClassifier.load_or_train(Path(sys.argv[1]), Path(sys.argv[2]))\n"
        "print(m.from_cache, m.parse('hoi').intent, 'sklearn' in sys.modules)"
    )
    command = [sys.executable, "-c", script, str(nlu_copy), str(tmp_path / "cache")]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "greet", "False"]


def test_model_version_is_part_of_the_cache_key(
    nlu_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    EmbeddedClassifier.load_or_train(nlu_copy, cache)
    monkeypatch.setattr(nlu, "MODEL_VERSION", nlu.MODEL_VERSION + "-next")
    assert not EmbeddedClassifier.load_or_train(nlu_copy, cache).from_cache


# ------------------------------------------------------------------------- decisions


def test_commands_and_empty_text_are_never_classified() -> None:
    spy = FixedClassifier("greet", 0.9)
    for text in ("/start", "  /stop", "/help@HulpwijzerBot", "", "   "):
        assert parse_message(spy, text) is None
    assert spy.seen == []
    assert parse_message(spy, "hoi") == Parse("greet", 0.9)
    assert spy.seen == ["hoi"]


def test_classifier_parse_picks_the_likely_intent(fixture_model: EmbeddedClassifier) -> None:
    parse = fixture_model.parse("hij wil geld anders stuurt hij mn nudes naar mn ouders")
    assert parse.intent == "sextortion"
    assert 0.0 < parse.confidence <= 1.0
    assert fixture_model.parse("hoi").intent == "greet"


def _training_set(root: Path) -> tuple[list[str], list[str]]:
    data = load_training_data(root)
    return [normalise(e.text) for e in data.examples], [e.intent for e in data.examples]


def test_numpy_scorer_matches_scikit_learn() -> None:
    texts, labels = _training_set(FIXTURE / "data")
    pipeline = fit_pipeline(texts, labels)
    scorer = LinearScorer.from_pipeline(pipeline)
    assert scorer.calibration == "sigmoid"
    probes = [normalise(e.text) for e in load_training_data(FIXTURE / "tests").examples]
    probes += ["", "zzqqxx", "!!!", "a", "heelp op insta", "x  y", "ik wil dood"]
    for text in probes:
        reference = pipeline.predict_proba([text])[0]
        assert list(scorer.probabilities(text)) == pytest.approx(list(reference), abs=1e-9)


def test_ngrams_match_scikit_learn_analyzers() -> None:
    texts, labels = _training_set(FIXTURE / "data")
    pipeline = fit_pipeline(texts, labels)
    scorer = LinearScorer.from_pipeline(pipeline)
    vectorizers = [v for _, v in pipeline.named_steps["features"].transformer_list]
    for text in ["", "a", "ab", "hoi daar", "één  twee\tdrie", "mn ex's nudes!!", texts[3]]:
        for block, vectorizer in zip(scorer.blocks, vectorizers, strict=True):
            assert sorted(block.grams(text)) == sorted(vectorizer.build_analyzer()(text))


def test_tiny_data_trains_without_calibration_folds(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.yml").write_text(
        "nlu:\n- intent: greet\n  examples: |\n    - hoi\n"
        "- intent: bullying\n  examples: |\n    - ze pesten me\n"
        "- intent: deny\n  examples: |\n    - nee\n",
        "utf-8",
    )
    model = EmbeddedClassifier.load_or_train(tmp_path, tmp_path / "cache")
    assert model.scorer.calibration == "softmax"
    assert model.parse("hoi hoi").intent == "greet"
    assert sum(model.probabilities("ze pesten")) == pytest.approx(1.0)
    texts, labels = _training_set(tmp_path / "data")
    reference = fit_pipeline(texts, labels).predict_proba(["ze pesten"])[0]
    assert model.probabilities("ze pesten") == pytest.approx(list(reference), abs=1e-9)
    again = EmbeddedClassifier.load_or_train(tmp_path, tmp_path / "cache")
    assert again.from_cache and again.parse("hoi hoi") == model.parse("hoi hoi")


def test_fewer_than_three_intents_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.yml").write_text(
        "nlu:\n- intent: greet\n  examples: |\n    - hoi\n", "utf-8"
    )
    with pytest.raises(DataError, match="three intents"):
        EmbeddedClassifier.load_or_train(tmp_path, tmp_path / "cache")


def test_decide_returns_the_top_intent() -> None:
    ranking = [("crisis_danger", CRISIS_THRESHOLD), ("threat", 0.5), ("bullying", 0.15)]
    assert decide(ranking, (("age", "15"),)) == Parse("threat", 0.5, (("age", "15"),))
    assert decide([], ()) == Parse("out_of_scope", 0.0)


def test_crisis_rule_wins_over_a_confident_classifier() -> None:
    text = "ik wil zelfmoord plegen want mijn naaktfoto's staan online"
    classifier = FixedClassifier("image_abuse", 0.99)
    parse = parse_message(classifier, text)
    assert parse is not None and parse.intent == "image_abuse"
    assert final_intent(text, parse) == Parse("crisis_suicide", 1.0)


def test_danger_rule_maps_to_crisis_danger() -> None:
    text = "help hij staat nu voor mijn deur met een mes"
    assert final_intent(text, Parse("stalking", 0.9)).intent == "crisis_danger"


def test_classifier_crisis_is_kept_when_rules_are_silent() -> None:
    text = "het heeft allemaal geen zin meer"
    assert crisis_rule(text) is None  # the case where only the classifier sees it
    assert final_intent(text, Parse("crisis_suicide", 0.4)) == Parse("crisis_suicide", 0.4)
    assert final_intent("hoi", Parse("greet", 0.9)) == Parse("greet", 0.9)
    # below the crisis threshold the engine must not act on it: it shows options instead
    assert final_intent("mwah", Parse("crisis_danger", 0.2)).intent == "out_of_scope"


def test_make_classifier_backends(tmp_path: Path) -> None:
    assert isinstance(make_classifier("embedded", None, FIXTURE, tmp_path), EmbeddedClassifier)
    rasa = make_classifier("rasa", "http://127.0.0.1:5005/", FIXTURE, tmp_path)
    assert isinstance(rasa, RasaClassifier)
    assert rasa.url == "http://127.0.0.1:5005/model/parse"
    assert make_classifier("none", None, FIXTURE, tmp_path).parse("hoi").intent == "out_of_scope"
    assert isinstance(make_classifier("none", None, FIXTURE, tmp_path), NoClassifier)
    with pytest.raises(ValueError, match="RASA_URL"):
        make_classifier("rasa", None, FIXTURE, tmp_path)
    with pytest.raises(ValueError, match="unknown"):
        make_classifier("gpt", None, FIXTURE, tmp_path)


# ------------------------------------------------------------------------- Rasa adapter


class FakeRasa(BaseHTTPRequestHandler):
    """Speaks just enough of Rasa's POST /model/parse."""

    mode: ClassVar[str] = "ok"
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeRasa.received.append({"path": self.path, "body": body})
        if FakeRasa.mode == "slow":
            time.sleep(1.0)
        if FakeRasa.mode == "error":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"status": "failure"}')
            return
        if FakeRasa.mode == "garbage":
            payload = b"<html>not json</html>"
        else:
            payload = json.dumps(self.answer(body["text"])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    @staticmethod
    def answer(text: str) -> dict[str, Any]:
        if FakeRasa.mode == "fallback":
            intent = {"name": "nlu_fallback", "confidence": 0.7}
            ranking = [intent, {"name": "bullying", "confidence": 0.3}]
        else:
            intent = {"name": "image_abuse", "confidence": 0.91}
            ranking = [intent, {"name": "sextortion", "confidence": 0.05}]
        return {
            "text": text,
            "intent": intent,
            "intent_ranking": ranking,
            "entities": [
                {"entity": "platform", "value": "instagram", "start": 7, "end": 12},
                {"entity": "age", "value": "15", "start": 20, "end": 22},
            ],
        }

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return


@pytest.fixture
def fake_rasa() -> Iterator[str]:
    FakeRasa.mode = "ok"
    FakeRasa.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRasa)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_rasa_adapter_maps_parse_json(fake_rasa: str) -> None:
    parse = RasaClassifier(fake_rasa, timeout=2.0).parse("op insta, ik ben 15")
    assert parse == Parse("image_abuse", 0.91, (("platform", "instagram"), ("age", "15")))
    assert FakeRasa.received == [{"path": "/model/parse", "body": {"text": "op insta, ik ben 15"}}]


def test_rasa_fallback_passes_the_best_real_intent(fake_rasa: str) -> None:
    FakeRasa.mode = "fallback"
    assert RasaClassifier(fake_rasa, timeout=2.0).parse("huh").intent == "bullying"
    only_fallback = {"intent": {"name": "nlu_fallback", "confidence": 0.5}, "entities": []}
    assert RasaClassifier.from_rasa_json(only_fallback) == Parse("out_of_scope", 0.0)


@pytest.mark.parametrize("mode", ["error", "slow", "garbage"])
def test_rasa_failures_degrade_to_out_of_scope_without_logging_text(
    fake_rasa: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    FakeRasa.mode = mode
    secret = "mijn geheime tekst over mijn ex"
    with caplog.at_level(logging.DEBUG, logger="bot.nlu"):
        started = time.perf_counter()
        parse = RasaClassifier(fake_rasa, timeout=0.3).parse(secret)
    assert parse == Parse("out_of_scope", 0.0)
    assert time.perf_counter() - started < 0.9
    assert caplog.records, "the failure kind is logged"
    assert all(secret not in record.getMessage() for record in caplog.records)


def test_rasa_unreachable_is_out_of_scope() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeRasa)
    port = server.server_address[1]
    server.server_close()  # nothing listens on this port any more
    assert RasaClassifier(f"http://127.0.0.1:{port}", 0.5).parse("hoi").intent == "out_of_scope"


def test_commands_never_reach_the_rasa_server(fake_rasa: str) -> None:
    assert parse_message(RasaClassifier(fake_rasa, 1.0), "/stop") is None
    assert FakeRasa.received == []


def test_rasa_json_without_ranking_uses_the_intent() -> None:
    body = {"intent": {"name": "crisis_danger", "confidence": 0.4}, "entities": None}
    assert RasaClassifier.from_rasa_json(body) == Parse("crisis_danger", 0.4)
    with pytest.raises(ValueError):
        RasaClassifier.from_rasa_json(["not", "an", "object"])


# ------------------------------------------------------------------------- evaluation and CLI


def test_evaluate_counts_confusions_and_crisis_recall() -> None:
    data = load_training_data(FIXTURE / "tests")
    report = evaluate(FixedClassifier("bullying", 0.9), data)
    assert report.examples == len(data.examples)
    bullying = sum(e.intent == "bullying" for e in data.examples)
    assert report.accuracy == pytest.approx(bullying / len(data.examples))
    assert report.per_intent["bullying"].recall == 1.0
    assert report.per_intent["greet"].recall == 0.0
    assert report.crisis_recall_classifier == 0.0
    # rules alone catch some crisis sentences; the union is what the bot does
    assert report.crisis_recall == report.crisis_recall_rules
    assert ("greet", "bullying", 2) in report.confused
    assert report.entities["platform"].recall == 0.0  # a fixed answer finds no entities
    table = report.format_table()
    for word in ("accuracy", "macro-F1", "crisis recall", "precision", "most confused"):
        assert word in table


def test_metrics_match_scikit_learn(fixture_model: EmbeddedClassifier) -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    data = load_training_data(FIXTURE / "tests")
    report = evaluate(fixture_model, data)
    truth = [e.intent for e in data.examples]
    predicted = [fixture_model.parse(e.text).intent for e in data.examples]
    labels = sorted(set(truth) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    assert report.accuracy == pytest.approx(accuracy_score(truth, predicted))
    assert report.macro_f1 == pytest.approx(
        f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)
    )
    for i, label in enumerate(labels):
        score = report.per_intent[label]
        assert (score.precision, score.recall, score.f1) == pytest.approx(
            (precision[i], recall[i], f1[i])
        )
        assert score.support == support[i]


def test_evaluate_fixture_model(fixture_model: EmbeddedClassifier) -> None:
    synonyms = load_training_data(FIXTURE / "data").synonyms
    report = evaluate(fixture_model, load_training_data(FIXTURE / "tests"), synonyms)
    assert report.crisis_recall == 1.0
    assert report.accuracy >= 0.6
    # 'ig' is annotated in the test file and mapped to 'instagram' by the training synonyms
    assert report.entities["platform"].recall == 1.0
    assert report.entities["age"].support == 1
    assert "url" not in report.entities  # not annotated in the test data: not scored
    assert "entity" in report.format_table()


def test_cmd_train_then_up_to_date(
    nlu_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_nlu_train(nlu_copy, tmp_path / "c") == 0
    assert "Trained" in capsys.readouterr().out
    assert cmd_nlu_train(nlu_copy, tmp_path / "c") == 0
    assert "up to date" in capsys.readouterr().out


def test_cmd_train_reports_broken_data(
    nlu_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (nlu_copy / "data" / "en.yml").write_text("nlu: [", "utf-8")
    assert cmd_nlu_train(nlu_copy, tmp_path / "c") == 1
    assert "en.yml" in capsys.readouterr().err


def test_cmd_eval_prints_the_report(
    nlu_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cmd_nlu_eval(nlu_copy, tmp_path / "c", None) == 0
    out = capsys.readouterr().out
    assert "macro-F1" in out and "crisis recall" in out
    assert cmd_nlu_eval(nlu_copy, tmp_path / "c", nlu_copy / "tests" / "test.yml") == 0


def test_cmd_classify_writes_one_json_object_per_line(nlu_copy: Path, tmp_path: Path) -> None:
    stdin = io.StringIO("hoi\n/start\n\nik wil zelfmoord plegen\nhet staat op insta, ik ben 15\n")
    stdout = io.StringIO()
    assert cmd_nlu_classify(nlu_copy, tmp_path / "c", stdin, stdout) == 0
    rows = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [row["text"] for row in rows] == [
        "hoi",
        "/start",
        "ik wil zelfmoord plegen",
        "het staat op insta, ik ben 15",
    ]
    assert rows[0]["intent"] == "greet"
    assert rows[1] == {"text": "/start", "intent": None, "confidence": 0.0, "entities": []}
    assert rows[2]["intent"] == "crisis_suicide" and rows[2]["confidence"] == 1.0
    assert rows[3]["entities"] == [
        {"entity": "platform", "value": "instagram"},
        {"entity": "age", "value": "15"},
    ]
    assert set(rows[0]) == {"text", "intent", "confidence", "entities"}


def test_cmd_classify_uses_a_given_classifier_and_skips_commands(tmp_path: Path) -> None:
    spy = FixedClassifier("bullying", 0.8)
    stdout = io.StringIO()
    cmd_nlu_classify(FIXTURE, tmp_path, io.StringIO("/help\nze pesten me\n"), stdout, spy)
    assert spy.seen == ["ze pesten me"]
    assert json.loads(stdout.getvalue().splitlines()[1])["intent"] == "bullying"


# ------------------------------------------------------------------------- the real data


@pytest.fixture(scope="module")
def real_model(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedClassifier:
    assert (REAL_NLU / "data").is_dir(), "nlu/data is missing"
    return EmbeddedClassifier.load_or_train(REAL_NLU, tmp_path_factory.mktemp("real-cache"))


# nlu/tests: the held-out set the data was tuned against (per-intent scores only);
# nlu/tests_blind: written later by someone who saw neither the training data nor those;
# nlu/tests_hard: longer, mixed messages, crisis told inside a story (docs/nlu.md).
@pytest.mark.parametrize("folder", ["tests", "tests_blind", "tests_hard"])
def test_real_data_meets_the_quality_gate(real_model: EmbeddedClassifier, folder: str) -> None:
    report = evaluate(real_model, load_training_data(REAL_NLU / folder))
    print(report.format_table())
    assert report.crisis_recall == 1.0
    assert report.macro_f1 >= 0.85, report.format_table()


@pytest.mark.parametrize("folder", ["tests", "tests_blind", "tests_hard"])
def test_real_test_sentences_never_appear_in_training(folder: str) -> None:
    def same(text: str) -> str:
        return " ".join(text.casefold().split())

    train = {same(e.text) for e in load_training_data(REAL_NLU / "data").examples}
    tests = load_training_data(REAL_NLU / folder).examples
    assert len(tests) >= 300
    assert [e.text for e in tests if same(e.text) in train] == []


def test_real_data_has_every_intent() -> None:
    intents = set(load_training_data(REAL_NLU / "data").intents)
    expected = set(SITUATIONS) | {"crisis_suicide", "crisis_danger", "greet", "affirm", "deny"}
    expected |= {"stop", "ask_human", "goodbye", "out_of_scope"}
    assert expected <= intents, sorted(expected - intents)


@pytest.mark.parametrize(
    ("text", "platform"),
    [
        ("mn nudes staan op insta", "instagram"),
        ("hij stuurde het via snap", "snapchat"),
        ("iemand zette het op twitter", "x"),
        ("there's a video on yt", "youtube"),
        ("een nepaccount op fb", "facebook"),
    ],
)
def test_real_synonyms_map_platforms(
    real_model: EmbeddedClassifier, text: str, platform: str
) -> None:
    assert ("platform", platform) in real_model.parse(text).entities


def test_real_model_parses_fast(real_model: EmbeddedClassifier) -> None:
    real_model.parse("warm up")
    started = time.perf_counter()
    for _ in range(50):
        real_model.parse("he says he'll send my pics to my family unless I pay")
    assert (time.perf_counter() - started) / 50 < 0.02  # generous for slow CI; goal is 5 ms


def test_cache_files_are_written_atomically_under_umask(nlu_copy: Path, tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        EmbeddedClassifier.load_or_train(nlu_copy, tmp_path / "cache")
    finally:
        os.umask(old)
    [cached] = (tmp_path / "cache").glob("nlu-*.npz")
    assert cached.stat().st_mode & 0o777 == 0o600
