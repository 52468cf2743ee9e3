"""Understanding free text: the Classifier protocol, the embedded engine, the Rasa adapter.

NLU only suggests; the engine confirms with a button. Training data is Rasa-format YAML in
`nlu/` so the same files train both the embedded scikit-learn engine and a Rasa server.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import unicodedata
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np
import yaml

from bot.errors import DataError
from bot.events import Parse

logger = logging.getLogger(__name__)

MODEL_VERSION = "5"
"""Part of the cache key: bump it when features or model change so old caches retrain."""

CRISIS_THRESHOLD = 0.35
"""Deliberately low: a classifier's crisis intent at or above this confidence interrupts
the conversation (the engine's crisis_threshold is the same number)."""


CRISIS_INTENTS = ("crisis_suicide", "crisis_danger")
OUT_OF_SCOPE = "out_of_scope"
PLATFORMS = (
    "instagram", "facebook", "tiktok", "snapchat", "whatsapp", "telegram", "x",
    "youtube", "discord", "reddit", "pornhub", "onlyfans", "google",
)  # fmt: skip

_CRISIS_KIND_TO_INTENT = {"suicide": "crisis_suicide", "danger": "crisis_danger"}


# --------------------------------------------------------------------------- training data


@dataclass(frozen=True)
class Example:
    """One training or test sentence, annotations stripped, entities as (entity, value)."""

    text: str
    intent: str
    entities: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TrainingData:
    """Everything read from Rasa-format files. `synonyms` maps a lower-cased variant to
    its canonical value; `lookups` maps a lookup table name to its elements."""

    examples: tuple[Example, ...]
    synonyms: Mapping[str, str] = field(default_factory=dict)
    lookups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    files: tuple[Path, ...] = ()

    @property
    def intents(self) -> list[str]:
        return sorted({example.intent for example in self.examples})


_ANNOTATION = re.compile(r"\[(?P<text>[^\[\]]+)\](?:\((?P<short>[^()]+)\)|(?P<json>\{[^{}]*\}))")
_KNOWN_KEYS = ("intent", "synonym", "lookup", "regex")
_IGNORED_TOP_KEYS = ("version", "stories", "rules", "responses")


def data_files(path: Path) -> list[Path]:
    """The YAML files under `path` (a file or a directory, recursively), in a stable order."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def load_training_data(path: Path) -> TrainingData:
    """Read Rasa 3.x NLU YAML from a file or directory; raise DataError listing every
    problem (file and what is wrong) so an operator can fix them in one go."""
    files = data_files(path)
    if not files:
        raise DataError([f"{path}: no .yml files with NLU data found"])
    problems: list[str] = []
    raw: list[tuple[str, str, Path]] = []  # (line, intent, file)
    synonyms: dict[str, str] = {}
    lookups: dict[str, list[str]] = {}
    for file in files:
        _read_file(file, raw, synonyms, lookups, problems)
    examples: list[Example] = []
    for line, intent, file in raw:
        try:
            text, entities = strip_annotations(line)
        except ValueError as exc:
            problems.append(f"{file}: intent {intent!r}, example {line!r}: {exc}")
            continue
        mapped = tuple((name, synonyms.get(value.lower(), value)) for name, value in entities)
        examples.append(Example(text, intent, mapped))
    if problems:
        raise DataError(problems)
    return TrainingData(
        examples=tuple(examples),
        synonyms=synonyms,
        lookups={name: tuple(values) for name, values in lookups.items()},
        files=tuple(files),
    )


def _read_file(
    file: Path,
    raw: list[tuple[str, str, Path]],
    synonyms: dict[str, str],
    lookups: dict[str, list[str]],
    problems: list[str],
) -> None:
    try:
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(f"{file}: cannot be read as YAML ({_one_line(exc)})")
        return
    if not isinstance(document, dict):
        problems.append(f"{file}: expected a mapping with an 'nlu:' list at the top")
        return
    unknown = [key for key in document if key != "nlu" and key not in _IGNORED_TOP_KEYS]
    if unknown:
        problems.append(f"{file}: unknown top-level key(s) {', '.join(map(str, unknown))}")
    if "nlu" not in document:
        if not any(key in document for key in ("stories", "rules", "responses")):
            problems.append(f"{file}: has no 'nlu:' section")
        return
    items = document["nlu"]
    if not isinstance(items, list):
        problems.append(f"{file}: 'nlu:' must be a list of intent/synonym/lookup/regex blocks")
        return
    for number, item in enumerate(items, start=1):
        where = f"{file}: nlu item {number}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping like '- intent: greet'")
            continue
        kinds = [key for key in _KNOWN_KEYS if key in item]
        if len(kinds) != 1:
            problems.append(f"{where}: needs exactly one of {', '.join(_KNOWN_KEYS)}")
            continue
        kind = kinds[0]
        name = item[kind]
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where}: '{kind}:' needs a name")
            continue
        lines = _example_lines(item.get("examples"), f"{where} ({kind} {name!r})", problems)
        if kind == "intent":
            raw.extend((line, name, file) for line in lines)
        elif kind == "synonym":
            for line in lines:
                synonyms[line.lower()] = name
            synonyms.setdefault(name.lower(), name)
        elif kind == "lookup":
            lookups.setdefault(name, []).extend(lines)


def _example_lines(examples: object, where: str, problems: list[str]) -> list[str]:
    """Rasa allows `examples: |` with '- ' lines, or a list of {text: ...} mappings."""
    if isinstance(examples, str):
        lines: list[str] = []
        for raw_line in examples.splitlines():
            stripped = raw_line.strip()
            if not stripped:
                continue
            if not stripped.startswith("- "):
                problems.append(f"{where}: example line {stripped!r} must start with '- '")
                continue
            line = stripped[2:].strip()
            if line:
                lines.append(line)
        if not lines:
            problems.append(f"{where}: has no examples")
        return lines
    if isinstance(examples, list):
        texts = [entry.get("text") if isinstance(entry, dict) else None for entry in examples]
        if not texts or not all(isinstance(text, str) and text.strip() for text in texts):
            problems.append(f"{where}: every example in the list needs a 'text:'")
            return []
        return [str(text).strip() for text in texts]
    problems.append(f"{where}: 'examples:' must be a '|' block of '- ' lines")
    return []


def strip_annotations(line: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """'op [insta](platform)' -> ('op insta', (('platform', 'insta'),)); raises ValueError
    on a broken annotation so the loader can name it."""
    entities: list[tuple[str, str]] = []
    parts: list[str] = []
    last = 0
    for match in _ANNOTATION.finditer(line):
        parts.append(line[last : match.start()])
        surface = match.group("text")
        parts.append(surface)
        last = match.end()
        if match.group("short") is not None:
            entity, _, value = match.group("short").partition(":")
            entity = entity.strip()
            value = value.strip() or surface
        else:
            try:
                spec = json.loads(match.group("json"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"annotation is not valid JSON ({exc.msg})") from exc
            if not isinstance(spec, dict) or not isinstance(spec.get("entity"), str):
                raise ValueError('annotation needs {"entity": "..."}')
            entity = spec["entity"]
            value = str(spec.get("value", surface))
        if not entity:
            raise ValueError(f"annotation [{surface}] has no entity name")
        entities.append((entity, value))
    parts.append(line[last:])
    text = "".join(parts)
    if re.search(r"\[[^\]]*\]\s*[({]", text):
        raise ValueError("unclosed or malformed [text](entity) annotation")
    return " ".join(text.split()), tuple(entities)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


# --------------------------------------------------------------------------- normalisation

_URL = re.compile(
    r"(?<![@\w.])(?:https?://[^\s<>\"']+"
    r"|(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+"
    r"(?:com|nl|be|org|net|io|me|tv|co|app|info|eu|de|uk|fr|gg|ly|to|xxx|cc|link|site)"
    r"(?:/[^\s<>\"']*)?)(?![\w@])",
    re.IGNORECASE,
)
_REPEATS = re.compile(r"([^\W\d_])\1{2,}")  # letters only: '1000' stays '1000'


def normalise(text: str) -> str:
    """Lower-case, strip accents, shorten 'heeeelp' to 'heelp' and replace URLs by a token,
    so typing style and links do not change what the model sees."""
    text = _URL.sub(" urltoken ", text)
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("’", "'").replace("‘", "'")
    text = _REPEATS.sub(r"\1\1", text)
    return " ".join(text.split())


# --------------------------------------------------------------------------- entities

# Variants that are ordinary words too: they count as a platform only in the given context.
_X_CONTEXT = re.compile(r"(?:\b(?:op|on|via|naar|at|in|van|from|met|using)\s+)x\b")
_SNAP_VERB = re.compile(
    r"(?:\b(?:ik|je|jij|u|we|wij|ze|zij|hij|niet|echt|nog)\s+snap\b)"
    r"|(?:\bsnap\s+(?:het|er|je|jij|u|niet|nie|niks|wat|dat|t|'t|ik|hem|haar)\b)"
)
_PLATFORM_DOMAINS = {
    "youtu.be": "youtube", "twitter.com": "x", "fb.com": "facebook", "t.me": "telegram",
    "wa.me": "whatsapp", "instagr.am": "instagram", "redd.it": "reddit",
}  # fmt: skip
_NOT_AN_AGE = (
    r"(?!\s*(?:euro|€|\$|dollars?|keer|times|min|uur|hours?|dagen|days?|weken|weeks?"
    r"|maanden|months?|kg|cm|%))"
)
_AGE_PATTERNS = (
    re.compile(r"\bik\s+ben\s+(?:pas\s+|nog\s+maar\s+|net\s+)?(\d{1,2})\b" + _NOT_AN_AGE),
    re.compile(r"\b(?:van|is)\s+(?:pas\s+)?(\d{1,2})(?:\s*(?:jaar|jr|j)\b|\s*$|(?=\s*[,.!?)]))"),
    re.compile(
        r"(?<!\bal )(?<!sinds )(?<!\bvoor )(?<!\bna )(?<!\bover )(?<!\bruim )"
        r"\b(\d{1,2})\s*(?:jaar|jr|j)\b"
        r"(?!\s+(?:geleden|lang|terug|samen|getrouwd|cel|gevangenis|celstraf|later))"
    ),
    re.compile(r"\b(?:i'?m|i\s+am)\s+(?:only\s+|just\s+)?(\d{1,2})\b" + _NOT_AN_AGE),
    re.compile(r"\b(\d{1,2})[\s-]*(?:years?[\s-]*old|yrs?[\s-]*old|yo|y/o|y\.o\.)"),
    re.compile(
        r"\b(?:dochter|zoon|kind|meisje|meid|jongen|broer(?:tje)?|zus(?:je)?|nicht(?:je)?"
        r"|neef(?:je)?|vriendin|vriend|leerling(?:e)?|daughter|son|kid|child|girl|boy|brother"
        r"|sister|niece|nephew|friend|student|pupil)\s*,?\s+(?:van|is|who\s+is|aged)\s+"
        r"(?:pas\s+|nog\s+maar\s+|only\s+|just\s+)?(\d{1,2})\b(?![:.]\d)" + _NOT_AN_AGE
    ),
    re.compile(r"\b(?:aged?|leeftijd)\s*:?\s*(\d{1,2})\b"),
)


@dataclass(frozen=True)
class EntityExtractor:
    """Rule-based `platform`, `url` and `age` from the lookup table and synonyms: platform
    names are a closed list, so rules beat a learned tagger on a few hundred examples."""

    variants: Mapping[str, str]  # normalised variant -> canonical platform

    @classmethod
    def from_training_data(cls, data: TrainingData) -> EntityExtractor:
        variants: dict[str, str] = {name: name for name in PLATFORMS}
        for element in data.lookups.get("platform", ()):
            canonical = data.synonyms.get(element.lower(), element)
            variants[normalise(element)] = normalise(canonical)
        for variant, canonical in data.synonyms.items():
            if normalise(canonical) in PLATFORMS:
                variants[normalise(variant)] = normalise(canonical)
        for example in data.examples:
            for entity, value in example.entities:
                if entity == "platform" and normalise(value) in PLATFORMS:
                    variants.setdefault(normalise(value), normalise(value))
        return cls({k: v for k, v in variants.items() if k})

    def extract(self, text: str) -> tuple[tuple[str, str], ...]:
        found: list[tuple[int, str, str]] = []
        for match in _URL.finditer(text):
            url = match.group(0).rstrip(".,;:!?)")
            found.append((match.start(), "url", url))
            platform = _platform_of_url(url)
            if platform:
                found.append((match.start(), "platform", platform))
        plain = normalise(_URL.sub(" ", text))
        for start, platform in self._platforms(plain):
            found.append((10_000 + start, "platform", platform))
        for pattern in _AGE_PATTERNS:
            for match in pattern.finditer(plain):
                age = int(match.group(1))
                if 8 <= age <= 99:
                    found.append((10_000 + match.start(1), "age", str(age)))
        seen: set[tuple[str, str]] = set()
        result: list[tuple[str, str]] = []
        for _, entity, value in sorted(found, key=lambda item: item[0]):
            if (entity, value) not in seen:
                seen.add((entity, value))
                result.append((entity, value))
        return tuple(result)

    @functools.cached_property
    def _pattern(self) -> re.Pattern[str]:
        """One alternation, longest variant first, so 'insta dm' wins over 'insta'."""
        words = sorted((v for v in self.variants if v != "x"), key=len, reverse=True)
        if not words:
            return re.compile(r"(?!)")
        return re.compile(r"(?<![\w@])(?:" + "|".join(map(re.escape, words)) + r")(?!\w)")

    def _platforms(self, plain: str) -> Iterable[tuple[int, str]]:
        verbs = [m.span() for m in _SNAP_VERB.finditer(plain)]
        for match in self._pattern.finditer(plain):
            if match.group(0) == "snap" and any(a <= match.start() < b for a, b in verbs):
                continue  # Dutch 'ik snap het niet' is 'I don't get it', not Snapchat
            yield match.start(), self.variants[match.group(0)]
        if "x" in self.variants:  # a bare x only after 'op', 'on', 'via', ...
            for match in _X_CONTEXT.finditer(plain):
                yield match.end() - 1, self.variants["x"]


def _platform_of_url(url: str) -> str | None:
    host = re.sub(r"^https?://", "", url.lower()).split("/", 1)[0].split(":", 1)[0]
    host = host.removeprefix("www.").removeprefix("m.").removeprefix("vm.")
    if host in _PLATFORM_DOMAINS:
        return _PLATFORM_DOMAINS[host]
    for platform in PLATFORMS:
        if host == f"{platform}.com" or host.endswith(f".{platform}.com"):
            return platform
    return None


# --------------------------------------------------------------------------- classifiers


class Classifier(Protocol):
    """Anything that turns one free-text message into a suggested intent."""

    def parse(self, text: str) -> Parse: ...


def decide(ranking: Sequence[tuple[str, float]], entities: tuple[tuple[str, str], ...]) -> Parse:
    """The top intent with its confidence, for both backends. Whether it is sure enough to
    act on is the engine's call (nlu_threshold; crisis_threshold for crisis intents).
    A crisis intent that is not on top is not promoted: on our data that raised false
    alarms ("ik wil iets vragen") while the rules already caught every crisis sentence."""
    if not ranking:
        return Parse(OUT_OF_SCOPE, 0.0, entities)
    name, conf = max(ranking, key=lambda item: item[1])
    return Parse(name, round(conf, 4), entities)


class NoClassifier:
    """NLU_BACKEND=none: every free text is out of scope, so the engine shows options."""

    def parse(self, text: str) -> Parse:
        return Parse(OUT_OF_SCOPE, 0.0)


class EmbeddedClassifier:
    """TF-IDF word and character n-grams into a calibrated linear SVM: trains in seconds on
    CPU and its probabilities mean what they say. scikit-learn is needed only to train;
    a cached model is plain arrays, so starting the bot does not import it."""

    def __init__(self, scorer: LinearScorer, extractor: EntityExtractor) -> None:
        self.scorer = scorer
        self.extractor = extractor
        self.from_cache = False
        self.training_seconds = 0.0

    @property
    def labels(self) -> list[str]:
        return list(self.scorer.labels)

    @classmethod
    def train(cls, data: TrainingData) -> EmbeddedClassifier:
        started = time.perf_counter()
        texts = [normalise(example.text) for example in data.examples]
        labels = [example.intent for example in data.examples]
        if len(set(labels)) < 3:
            raise DataError([f"{', '.join(map(str, data.files))}: need at least three intents"])
        scorer = LinearScorer.from_pipeline(fit_pipeline(texts, labels))
        classifier = cls(scorer, EntityExtractor.from_training_data(data))
        classifier.training_seconds = time.perf_counter() - started
        return classifier

    @classmethod
    def load_or_train(cls, nlu_dir: Path, cache_dir: Path) -> EmbeddedClassifier:
        """Load the model cached for exactly these training files, or train and cache it;
        so the first start after editing `nlu/data` retrains and later starts are fast."""
        data_dir = training_dir(nlu_dir)
        files = data_files(data_dir)
        key = cache_key(files, data_dir)
        path = cache_dir / f"nlu-{key[:24]}.npz"
        cached = _read_cache(path, key)
        if cached is not None:
            cached.from_cache = True
            return cached
        classifier = cls.train(load_training_data(data_dir))
        _write_cache(path, key, classifier)
        return classifier

    def probabilities(self, normalised: str) -> list[float]:
        """Calibrated probability per intent, in the order of `labels`."""
        result: list[float] = self.scorer.probabilities(normalised).tolist()
        return result

    def ranking(self, text: str) -> list[tuple[str, float]]:
        """Every intent with its calibrated probability, most likely first."""
        pairs = zip(self.scorer.labels, self.probabilities(normalise(text)), strict=True)
        return sorted(pairs, key=lambda item: item[1], reverse=True)

    def parse(self, text: str) -> Parse:
        return decide(self.ranking(text), self.extractor.extract(text))


def fit_pipeline(texts: Sequence[str], labels: Sequence[str]) -> Any:
    """The scikit-learn model. LinearScorer reproduces its predict_proba without it."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.svm import LinearSVC

    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)),
        ]
    )
    folds = min(5, min(Counter(labels).values()))
    estimator: Any
    if folds >= 2:
        svm = LinearSVC(C=1.0, class_weight="balanced")
        estimator = CalibratedClassifierCV(svm, cv=folds, method="sigmoid", ensemble=False)
    else:  # too few examples per intent to calibrate by cross-validation
        estimator = LogisticRegression(C=20.0, max_iter=2000, class_weight="balanced")
    model = Pipeline([("features", features), ("classify", estimator)])
    model.fit(list(texts), list(labels))
    return model


_WORD_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token_pattern
_WHITESPACES = re.compile(r"\s\s+")


@dataclass(frozen=True)
class _Block:
    """One TF-IDF vectoriser (sublinear tf, l2 norm) as plain data."""

    analyzer: str  # "word" or "char_wb"
    ngram: tuple[int, int]
    vocabulary: Mapping[str, int]
    idf: np.ndarray[Any, Any]
    offset: int

    def grams(self, text: str) -> list[str]:
        """The same n-grams as scikit-learn's analyzers (checked by a test)."""
        low, high = self.ngram
        text = text.lower()
        grams: list[str] = []
        if self.analyzer == "word":
            tokens = _WORD_TOKEN.findall(text)
            for n in range(low, high + 1):
                grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
            return grams
        for word in _WHITESPACES.sub(" ", text).split():
            padded = f" {word} "
            for n in range(low, high + 1):
                grams.extend(padded[i : i + n] for i in range(max(1, len(padded) - n + 1)))
                if len(padded) <= n:
                    break  # a word shorter than n counts once, as in scikit-learn
        return grams


class LinearScorer:
    """predict_proba of the fitted pipeline, in numpy: per message that is a fraction of a
    millisecond instead of several, and loading it needs neither scikit-learn nor pickle."""

    def __init__(
        self,
        labels: Sequence[str],
        blocks: Sequence[_Block],
        weights: np.ndarray[Any, Any],
        intercept: np.ndarray[Any, Any],
        calibration: str,
        slopes: np.ndarray[Any, Any],
    ) -> None:
        self.labels = tuple(labels)
        self.blocks = tuple(blocks)
        self.weights = weights  # (features, intents): one row per feature, for a fast gather
        self.intercept = intercept
        self.calibration = calibration  # "sigmoid" (one-vs-rest, normalised) or "softmax"
        self.slopes = slopes  # sigmoid a and b per intent (2, intents); empty for softmax

    @classmethod
    def from_pipeline(cls, model: Any) -> LinearScorer:
        from sklearn.calibration import CalibratedClassifierCV

        union = model.named_steps["features"]
        estimator = model.named_steps["classify"]
        labels = [str(label) for label in estimator.classes_]
        blocks: list[_Block] = []
        offset = 0
        for _, vectorizer in union.transformer_list:
            assert vectorizer.sublinear_tf and vectorizer.norm == "l2" and vectorizer.use_idf
            vocabulary = {str(term): int(index) for term, index in vectorizer.vocabulary_.items()}
            blocks.append(
                _Block(
                    analyzer=str(vectorizer.analyzer),
                    ngram=tuple(vectorizer.ngram_range),
                    vocabulary=vocabulary,
                    idf=np.asarray(vectorizer.idf_, dtype=np.float64),
                    offset=offset,
                )
            )
            offset += len(vocabulary)
        if isinstance(estimator, CalibratedClassifierCV):
            [inner] = estimator.calibrated_classifiers_
            linear = inner.estimator
            assert [str(c) for c in linear.classes_] == labels and estimator.method == "sigmoid"
            calibration = "sigmoid"
            a_b = [[c.a_ for c in inner.calibrators], [c.b_ for c in inner.calibrators]]
            slopes = np.asarray(a_b, dtype=np.float64)
        else:
            linear = estimator
            calibration = "softmax"
            slopes = np.zeros((0, len(labels)))
        return cls(
            labels,
            blocks,
            np.ascontiguousarray(linear.coef_.T, dtype=np.float64),
            np.asarray(linear.intercept_, dtype=np.float64),
            calibration,
            slopes,
        )

    def probabilities(self, normalised: str) -> np.ndarray[Any, Any]:
        scores = self.intercept.copy()
        for block in self.blocks:
            vocabulary = block.vocabulary
            counts = Counter(vocabulary[g] for g in block.grams(normalised) if g in vocabulary)
            if not counts:
                continue
            index = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            values = (np.log(tf) + 1.0) * block.idf[index]
            values /= np.sqrt(values @ values)
            scores += values @ self.weights[index + block.offset]
        if self.calibration == "softmax":
            exp = np.exp(scores - scores.max())
            softmax: np.ndarray[Any, Any] = exp / exp.sum()
            return softmax
        calibrated = 1.0 / (1.0 + np.exp(self.slopes[0] * scores + self.slopes[1]))
        total = calibrated.sum()
        if total == 0:
            return np.full_like(calibrated, 1.0 / len(calibrated))
        normalised_scores: np.ndarray[Any, Any] = calibrated / total
        return normalised_scores


def training_dir(nlu_dir: Path) -> Path:
    """`nlu_dir` is the Rasa project (config.yml, data/, tests/); its `data/` trains."""
    return nlu_dir / "data"


def cache_key(files: Sequence[Path], root: Path) -> str:
    """SHA-256 over the training files' names and bytes plus the model version: any edit
    to the data, or to how we train, retrains."""
    digest = hashlib.sha256()
    digest.update(f"model={MODEL_VERSION}".encode())
    for file in files:
        name = file.relative_to(root).as_posix() if root in file.parents else file.name
        digest.update(b"\0" + name.encode())
        digest.update(b"\0" + file.read_bytes())
    return digest.hexdigest()


def _read_cache(path: Path, key: str) -> EmbeddedClassifier | None:
    """Arrays and JSON in an .npz, loaded with allow_pickle=False: a cache file can at worst
    be wrong (then we retrain), never run code."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta"].tobytes().decode("utf-8"))
            if meta.get("key") != key:
                logger.warning("nlu cache does not match the training data, retraining")
                return None
            blocks = [
                _Block(
                    analyzer=block["analyzer"],
                    ngram=(int(block["ngram"][0]), int(block["ngram"][1])),
                    vocabulary=block["vocabulary"],
                    idf=archive[f"idf{number}"],
                    offset=int(block["offset"]),
                )
                for number, block in enumerate(meta["blocks"])
            ]
            scorer = LinearScorer(
                meta["labels"],
                blocks,
                archive["weights"],
                archive["intercept"],
                meta["calibration"],
                archive["slopes"],
            )
            extractor = EntityExtractor(dict(meta["platform_variants"]))
    except FileNotFoundError:
        return None
    except Exception as exc:  # a corrupt or foreign cache is retrained, never fatal
        logger.warning("nlu cache unreadable, retraining: %s", type(exc).__name__)
        return None
    if scorer.weights.shape != (sum(len(b.vocabulary) for b in blocks), len(scorer.labels)):
        logger.warning("nlu cache is inconsistent, retraining")
        return None
    return EmbeddedClassifier(scorer, extractor)


def _write_cache(path: Path, key: str, classifier: EmbeddedClassifier) -> None:
    """Atomic (temp file + os.replace) and private (0600); older models are removed."""
    scorer = classifier.scorer
    meta = {
        "key": key,
        "labels": list(scorer.labels),
        "calibration": scorer.calibration,
        "blocks": [
            {
                "analyzer": block.analyzer,
                "ngram": list(block.ngram),
                "vocabulary": dict(block.vocabulary),
                "offset": block.offset,
            }
            for block in scorer.blocks
        ],
        "platform_variants": dict(classifier.extractor.variants),
    }
    arrays = {f"idf{number}": block.idf for number, block in enumerate(scorer.blocks)}
    arrays |= {"weights": scorer.weights, "intercept": scorer.intercept}
    arrays |= {"slopes": scorer.slopes}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".nlu-", suffix=".tmp")
    try:
        os.fchmod(handle, 0o600)
        with os.fdopen(handle, "wb") as temp:
            np.savez(temp, allow_pickle=False, **arrays)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    for old in [*path.parent.glob("nlu-*.npz"), *path.parent.glob("nlu-*.pickle")]:
        if old != path:
            old.unlink(missing_ok=True)


class RasaClassifier:
    """Asks a running Rasa server (`rasa run --enable-api`) via POST /model/parse. Any
    failure degrades to `out_of_scope` so the conversation goes on with buttons."""

    def __init__(self, url: str, timeout: float = 2.0) -> None:
        self.url = url.rstrip("/") + "/model/parse"
        self.timeout = timeout

    def parse(self, text: str) -> Parse:
        request = urllib.request.Request(  # noqa: S310 - the operator configures RASA_URL
            self.url,
            data=json.dumps({"text": text}).encode("utf-8"),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = json.loads(response.read().decode("utf-8"))
            return self.from_rasa_json(body)
        except Exception as exc:  # timeouts, refused connections, HTTP 5xx, bad JSON
            logger.warning("rasa parse failed: %s", _error_kind(exc))
            return Parse(OUT_OF_SCOPE, 0.0)

    @staticmethod
    def from_rasa_json(body: Any) -> Parse:
        """Map Rasa's parse JSON to Parse. `nlu_fallback` is skipped for the best real
        intent: the engine applies its own threshold, as for the embedded engine."""
        if not isinstance(body, dict):
            raise ValueError("rasa answer is not an object")
        ranking: list[tuple[str, float]] = []
        for item in body.get("intent_ranking") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                ranking.append((item["name"], float(item.get("confidence") or 0.0)))
        intent = body.get("intent") or {}
        if isinstance(intent, dict) and isinstance(intent.get("name"), str):
            top = (intent["name"], float(intent.get("confidence") or 0.0))
            if top not in ranking:
                ranking.insert(0, top)
        ranking = [(name, conf) for name, conf in ranking if name != "nlu_fallback"]
        entities: list[tuple[str, str]] = []
        for item in body.get("entities") or []:
            if isinstance(item, dict) and isinstance(item.get("entity"), str):
                pair = (item["entity"], str(item.get("value", "")))
                if pair not in entities:
                    entities.append(pair)
        return decide(ranking, tuple(entities))


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"URLError({type(exc.reason).__name__})"
    return type(exc).__name__


def make_classifier(
    backend: str, rasa_url: str | None, nlu_dir: Path, cache_dir: Path, timeout: float = 2.0
) -> Classifier:
    """Build the configured backend: 'embedded' (default), 'rasa' (needs rasa_url) or 'none'."""
    if backend == "embedded":
        return EmbeddedClassifier.load_or_train(nlu_dir, cache_dir)
    if backend == "rasa":
        if not rasa_url:
            raise ValueError("NLU_BACKEND=rasa needs RASA_URL")
        return RasaClassifier(rasa_url, timeout)
    if backend == "none":
        return NoClassifier()
    raise ValueError(f"unknown NLU backend {backend!r}")


# --------------------------------------------------------------------------- the decision


def is_command(text: str) -> bool:
    return text.lstrip().startswith("/")


def parse_message(classifier: Classifier, text: str) -> Parse | None:
    """The classifier's suggestion, or None for empty text and commands: a command is an
    instruction, never something to guess about, and it never leaves the process."""
    if not text.strip() or is_command(text):
        return None
    return classifier.parse(text)


def crisis_rule(text: str) -> str | None:
    """The safety layer's verdict as an intent name, or None."""
    from bot.safety import detect_crisis

    crisis = detect_crisis(text)
    if crisis is None:
        return None
    return _CRISIS_KIND_TO_INTENT.get(crisis.kind, "crisis_danger")


def final_intent(text: str, parse: Parse) -> Parse:
    """Rules and classifier are a union: either can raise a crisis and neither can cancel
    the other's. A crisis intent below CRISIS_THRESHOLD is not acted on, so it becomes
    `out_of_scope` and the engine shows options."""
    ruled = crisis_rule(text)
    if ruled is not None:
        return Parse(ruled, 1.0, parse.entities)
    if parse.intent in CRISIS_INTENTS and parse.confidence < CRISIS_THRESHOLD:
        return Parse(OUT_OF_SCOPE, parse.confidence, parse.entities)
    return parse


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class IntentScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EvalReport:
    """What `hulpwijzer nlu eval` prints. Accuracy and F1 judge the classifier alone;
    crisis recall judges what the bot does (rules and classifier together)."""

    examples: int
    accuracy: float
    macro_f1: float
    per_intent: Mapping[str, IntentScore]
    crisis_recall: float
    crisis_recall_classifier: float
    crisis_recall_rules: float
    crisis_support: int
    confused: tuple[tuple[str, str, int], ...]
    entities: Mapping[str, IntentScore] = field(default_factory=dict)

    def format_table(self) -> str:
        lines = [
            f"examples          {self.examples}",
            f"accuracy          {self.accuracy:.3f}",
            f"macro-F1          {self.macro_f1:.3f}",
            f"crisis recall     {self.crisis_recall:.3f}  (rules + classifier, "
            f"{self.crisis_support} crisis examples; classifier alone "
            f"{self.crisis_recall_classifier:.3f}, rules alone {self.crisis_recall_rules:.3f})",
            "",
            f"{'intent':<18} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}",
        ]
        for name, score in sorted(self.per_intent.items()):
            lines.append(
                f"{name:<18} {score.precision:>9.3f} {score.recall:>7.3f} "
                f"{score.f1:>6.3f} {score.support:>8d}"
            )
        if self.entities:
            lines += ["", f"{'entity':<18} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>8}"]
            for name, score in sorted(self.entities.items()):
                lines.append(
                    f"{name:<18} {score.precision:>9.3f} {score.recall:>7.3f} "
                    f"{score.f1:>6.3f} {score.support:>8d}"
                )
        lines.append("")
        if self.confused:
            lines.append("most confused (true -> predicted: count)")
            lines.extend(f"  {true} -> {pred}: {count}" for true, pred, count in self.confused)
        else:
            lines.append("most confused: none")
        return "\n".join(lines)


def evaluate(
    classifier: Classifier,
    test_data: TrainingData,
    synonyms: Mapping[str, str] | None = None,
    top_confused: int = 10,
) -> EvalReport:
    """Score a classifier on held-out examples, as `rasa test nlu` would, plus crisis recall.
    Annotated entities are compared after the training data's `synonyms` ('insta' ->
    'instagram'), only for entity types the test data annotates."""

    truth: list[str] = []
    predicted: list[str] = []
    crisis_total = crisis_final = crisis_classifier = crisis_rules = 0
    mapping = {key.lower(): value for key, value in (synonyms or {}).items()}
    annotated = {name for example in test_data.examples for name, _ in example.entities}
    entity_counts: dict[str, Counter[str]] = {name: Counter() for name in annotated}
    for example in test_data.examples:
        parse = classifier.parse(example.text)
        gold = {(name, mapping.get(value.lower(), value)) for name, value in example.entities}
        found = {(name, value) for name, value in parse.entities if name in annotated}
        for name, _ in gold & found:
            entity_counts[name]["tp"] += 1
        for name, _ in found - gold:
            entity_counts[name]["fp"] += 1
        for name, _ in gold - found:
            entity_counts[name]["fn"] += 1
        truth.append(example.intent)
        predicted.append(parse.intent)
        if example.intent in CRISIS_INTENTS:
            crisis_total += 1
            crisis_final += final_intent(example.text, parse).intent in CRISIS_INTENTS
            crisis_classifier += (
                parse.intent in CRISIS_INTENTS and parse.confidence >= CRISIS_THRESHOLD
            )
            crisis_rules += crisis_rule(example.text) is not None
    if not truth:
        raise DataError([f"{', '.join(map(str, test_data.files))}: no test examples"])
    per_intent = _per_label(truth, predicted)
    pairs = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    confused = tuple((t, p, n) for (t, p), n in pairs.most_common(top_confused))

    def ratio(part: int) -> float:
        return part / crisis_total if crisis_total else 1.0

    return EvalReport(
        examples=len(truth),
        accuracy=sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth),
        macro_f1=sum(score.f1 for score in per_intent.values()) / len(per_intent),
        per_intent=per_intent,
        crisis_recall=ratio(crisis_final),
        crisis_recall_classifier=ratio(crisis_classifier),
        crisis_recall_rules=ratio(crisis_rules),
        crisis_support=crisis_total,
        confused=confused,
        entities={name: _score(counts) for name, counts in entity_counts.items()},
    )


def _per_label(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, IntentScore]:
    """Precision, recall and F1 per label over the union of true and predicted labels, as
    scikit-learn's classification report (zero where undefined); tested against it."""
    scores: dict[str, IntentScore] = {}
    for label in sorted(set(truth) | set(predicted)):
        counts: Counter[str] = Counter()
        for t, p in zip(truth, predicted, strict=True):
            if t == label and p == label:
                counts["tp"] += 1
            elif p == label:
                counts["fp"] += 1
            elif t == label:
                counts["fn"] += 1
        scores[label] = _score(counts)
    return scores


def _score(counts: Counter[str]) -> IntentScore:
    tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return IntentScore(precision, recall, f1, tp + fn)


# --------------------------------------------------------------------------- commands


def cmd_nlu_train(nlu_dir: Path, cache_dir: Path) -> int:
    """`hulpwijzer nlu train`: retrain if the data changed, else confirm the cache is current."""
    try:
        classifier = EmbeddedClassifier.load_or_train(nlu_dir, cache_dir)
    except DataError as exc:
        return _report_data_error(exc)
    if classifier.from_cache:
        print(f"NLU model is up to date with {training_dir(nlu_dir)} (cache in {cache_dir}).")
    else:
        print(
            f"Trained the NLU model on {training_dir(nlu_dir)} in "
            f"{classifier.training_seconds:.1f} s; cached in {cache_dir}."
        )
    return 0


def cmd_nlu_eval(nlu_dir: Path, cache_dir: Path, test_path: Path | None = None) -> int:
    """`hulpwijzer nlu eval [PATH]`: the embedded engine on held-out data (default nlu/tests)."""
    try:
        classifier = EmbeddedClassifier.load_or_train(nlu_dir, cache_dir)
        synonyms = load_training_data(training_dir(nlu_dir)).synonyms
        test_data = load_training_data(test_path or nlu_dir / "tests")
        report = evaluate(classifier, test_data, synonyms)
    except DataError as exc:
        return _report_data_error(exc)
    print(report.format_table())
    return 0


def cmd_nlu_classify(
    nlu_dir: Path,
    cache_dir: Path,
    stdin: IO[str],
    stdout: IO[str],
    classifier: Classifier | None = None,
) -> int:
    """`hulpwijzer nlu classify`: one message per line in, one JSON object per line out;
    `intent` is the final decision including the safety rules. Commands get intent null."""
    try:
        engine = classifier or EmbeddedClassifier.load_or_train(nlu_dir, cache_dir)
    except DataError as exc:
        return _report_data_error(exc)
    for line in stdin:
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        parse = parse_message(engine, text)
        result: dict[str, Any]
        if parse is None:
            result = {"text": text, "intent": None, "confidence": 0.0, "entities": []}
        else:
            final = final_intent(text, parse)
            result = {
                "text": text,
                "intent": final.intent,
                "confidence": final.confidence,
                "entities": [{"entity": e, "value": v} for e, v in final.entities],
            }
        stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
        stdout.flush()
    return 0


def _report_data_error(exc: DataError) -> int:
    print("The NLU data has problems; fix them and run the command again:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  - {problem}", file=sys.stderr)
    return 1
