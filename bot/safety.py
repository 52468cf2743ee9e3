"""The crisis layer: rules that spot suicide, self-harm and immediate-danger language.

It runs before the NLU on every free-text input, in every state and mode, so a low
classifier score can never talk it out of a crisis. The rules are data
(data/crisis_rules.yml) that a helpline worker can read and extend; this module only
normalises text, validates and compiles the rules, and matches them.

Design choices, in short (the rules file documents the per-phrase decisions):
- Patterns are regexes over `normalise(text)`, so one rule covers capitals, accents,
  stretched letters ("dooood"), leetspeak ("d00d"), invisible characters and punctuation.
- An `unless` regex cancels only the matches it overlaps, so an idiom elsewhere in a
  message ("ik ga dood van het lachen, maar echt: ik wil dood") never hides a real one.
- Matching must stay linear on a 100,000-character message: the loader rejects patterns
  that can backtrack badly (nested or cross-word unbounded repeats) and offers `{gap}`,
  a safe "up to N words in between".
- Suicide wins over danger: if both match, the reply about 113 also names 112.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from bot.errors import DataError

CrisisKind = Literal["suicide", "danger"]

# Precedence: earlier kinds win when several match.
KINDS: tuple[CrisisKind, ...] = ("suicide", "danger")
LANGS: tuple[str, ...] = ("nl", "en", "any")
RULES_PATH = Path(__file__).resolve().parent.parent / "data" / "crisis_rules.yml"

_RULE_KEYS = frozenset({"id", "kind", "lang", "patterns", "unless", "note"})
_RULE_ID = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class Crisis:
    """What the crisis layer found. `rule` is a rule id, safe to log; never the user's text."""

    kind: CrisisKind
    rule: str


# --- normalisation -------------------------------------------------------------------

# Apostrophes are removed rather than turned into spaces, so "don't"/"dont", "i'm"/"im",
# "m'n"/"mn" and "kys'en"/"kysen" each have one spelling for the rules to match.
_APOSTROPHES = frozenset("'’‘`´ʼʹ′＇")
# Fillers that render as nothing but are letters, not format characters (Hangul, braille).
_INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Cyrillic and Greek look-alikes of Latin letters, used to slip past word filters.
_HOMOGLYPHS = str.maketrans("аеорсухіјѕοαειρκ", "aeopcyxijsoaeipk")
_LEET = str.maketrans("0134@$", "oieaas")
_LEET_CHARS = frozenset("0134@$")
_TOKEN = re.compile(r"[\w@$]++")
_HAS_LETTER = re.compile(r"[^\W\d_]")
_LONG_RUN = re.compile(r"([^\W\d_])\1{2,}")
_NON_WORD = re.compile(r"[\W_]+")
_SPELLED_OUT = re.compile(r"(?<![^ ])\w(?: \w){2,}(?![^ ])")  # "d o o d", from "d-o-o-d"


def _unleet(match: re.Match[str]) -> str:
    """Read digits and symbols as letters only inside words ("w1l"), never in numbers ("112")."""
    token = match.group()
    if _LEET_CHARS.isdisjoint(token) or not _HAS_LETTER.search(token):
        return token
    return token.translate(_LEET)


def _words(text: str) -> str:
    """normalise() without cutting stretched letters, so detection can try both readings."""
    text = unicodedata.normalize("NFKC", text).lower()
    kept = [
        ch
        for ch in unicodedata.normalize("NFD", text)
        if ch not in _APOSTROPHES
        and ch not in _INVISIBLE_LETTERS
        and unicodedata.category(ch) not in ("Mn", "Me", "Cf")
    ]
    text = unicodedata.normalize("NFC", "".join(kept)).translate(_HOMOGLYPHS)
    text = _TOKEN.sub(_unleet, text)
    return _NON_WORD.sub(" ", text).strip()


def normalise(text: str) -> str:
    """The one spelling the rules are written against: lower-case ASCII-ish words, single spaces.

    Lower-case, NFKC, no diacritics, no zero-width/bidi/format characters, apostrophes
    dropped, look-alike letters and leetspeak read as letters, runs of 3+ equal letters cut
    to 2, everything else that is not a letter or digit turned into one space.
    """
    return _LONG_RUN.sub(r"\1\1", _words(text))


# A stretched letter may stand for one ("wiiiil", "deurrrr") or two ("doooood"). Short
# messages try every mix for up to this many stretched runs; longer ones try all-two and
# all-one, which keeps a 100,000-character message to two passes.
_MAX_MIXED_RUNS = 3
_MAX_MIXED_LENGTH = 10_000


def _spellings(text: str) -> list[str]:
    """normalise(text) first, then other readings: stretched letters as one letter, and
    words spelled out letter by letter ("d-o-o-d", "k y s") joined up again."""
    words = _words(text)
    joined = _SPELLED_OUT.sub(lambda m: m.group().replace(" ", ""), words)
    if joined != words:
        return _stretch_readings(words) + _stretch_readings(joined)
    return _stretch_readings(words)


def _stretch_readings(words: str) -> list[str]:
    """`words` with each run of 3+ equal letters read as two letters, and as one."""
    runs = list(_LONG_RUN.finditer(words))
    if not runs:
        return [words]
    if len(runs) <= _MAX_MIXED_RUNS and len(words) <= _MAX_MIXED_LENGTH:
        choices = list(itertools.product((2, 1), repeat=len(runs)))
    else:
        choices = [(2,) * len(runs), (1,) * len(runs)]
    spellings: list[str] = []
    for choice in choices:
        parts, end = [], 0
        for run, keep in zip(runs, choice, strict=True):
            parts += [words[end : run.start()], run.group(1) * keep]
            end = run.end()
        parts.append(words[end:])
        spellings.append("".join(parts))
    return spellings


# --- pattern guard rails -------------------------------------------------------------

_GAP = re.compile(r" \{gap(?::([1-9]))?\} ")
_GAP_TOKEN = re.compile(r"\{gap(?::[1-9])?\}")
_QUANTIFIER = re.compile(r"\{(\d*)(?:(,)(\d*))?\}")
_ZERO_WIDTH_ESCAPES = frozenset({r"\b", r"\B", r"\A", r"\Z"})
_WORD_ESCAPES = frozenset({r"\w", r"\d"})
_GROUP_HEADER = re.compile(r"\(\?(?:P<\w+>|P=\w+\)|[:=!>]|<[=!]|[aiLmsux-]+[:)])?")


def _expand_gaps(pattern: str) -> str:
    """`a {gap} b` is a, then up to 3 (or `{gap:N}`: N) whole words, then b.

    Each word is matched possessively and ends at a space, so a gap never backtracks
    into a word and stays linear however long the message is.
    """
    return _GAP.sub(lambda m: r" (?:\w++ ){0,%s}" % (m.group(1) or "3"), pattern)


def _for_padded_text(pattern: str) -> str:
    """Rewrite a leading `\\b` or `^` for text that starts with one space.

    Rules see `" " + normalise(text)`, where a word start is always a space. A literal
    first character lets the regex engine skip ahead quickly instead of trying every
    position, which makes a long message about five times faster to check.
    """
    if pattern.startswith(r"\b"):
        return " " + pattern[2:]
    if pattern.startswith("^"):
        return "^ " + pattern[1:]
    return pattern


def _literal_problem(ch: str) -> str | None:
    if ch == " " or (ch.isalnum() and normalise(ch) == ch):
        return None
    if ch.isalnum():
        return f"contains {ch!r}, which normalised text never has; write {normalise(ch)!r}"
    return (
        f"contains {ch!r}, which normalised text never has "
        "(punctuation becomes a space, apostrophes are dropped)"
    )


def _class_end(pattern: str, start: int) -> int:
    """Index just past the `]` that closes the character class opening at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return min(i + 1, len(pattern))


def _is_word_class(body: str) -> bool:
    """A class that cannot match a space keeps an unbounded repeat inside one word."""
    return not body.startswith("^") and not any(
        bad in body for bad in (" ", r"\s", r"\S", r"\W", r"\D", r"\B")
    )


@dataclass
class _Frame:
    at_start: bool  # nothing has been matched yet in this alternative of the pattern
    starts_at_start: bool  # value of at_start after a `|` in this group
    unbounded_inside: bool = False


def pattern_problems(pattern: str) -> list[str]:
    """Why a hand-written pattern could hang on a long message or could never match.

    Guard rails, not a proof: unbounded repeats (`*`, `+`, `{m,}`) are allowed only on a
    single within-word atom (`\\w`, a letter, a class without space), not as the first
    thing in a pattern, and never inside a repeated group. `{gap}` covers the rest.
    """
    problems: list[str] = []
    frames = [_Frame(at_start=True, starts_at_start=True)]
    prev: tuple[str, bool] | None = None  # (what: word|other|group|gap, started at start)
    group_inner = False
    i, n = 0, len(pattern)
    while i < n:
        frame = frames[-1]
        ch = pattern[i]
        gap = _GAP_TOKEN.match(pattern, i)
        if gap:
            if frame.at_start:
                problems.append("starts with {gap}; begin with a word")
            prev, i = ("gap", frame.at_start), gap.end()
            frame.at_start = False
            continue
        if ch == "\\":
            escape = pattern[i : i + 2]
            i += 2
            if escape in _ZERO_WIDTH_ESCAPES:
                if escape in (r"\b", r"\A"):  # anchored: a repeat can start only at words
                    frame.at_start = False
                continue
            prev = ("word" if escape in _WORD_ESCAPES else "other", frame.at_start)
            frame.at_start = False
            continue
        if ch == "[":
            end = _class_end(pattern, i)
            body = pattern[i + 1 : end - 1]
            for letter in re.sub(r"\\.", "", body.lstrip("^")):
                if letter.isalnum() and (problem := _literal_problem(letter)):
                    problems.append(problem)
            prev = ("word" if _is_word_class(body) else "other", frame.at_start)
            frame.at_start = False
            i = end
            continue
        if ch == "(":
            header = _GROUP_HEADER.match(pattern, i)
            i = header.end() if header else i + 1
            if header and header.group().endswith(")"):
                if header.group().startswith("(?P="):  # a back-reference matches text
                    prev = ("other", frame.at_start)
                    frame.at_start = False
                continue  # otherwise inline flags like (?i): they match nothing
            frames.append(_Frame(at_start=frame.at_start, starts_at_start=frame.at_start))
            prev = None
            continue
        if ch == ")":
            i += 1
            if len(frames) == 1:
                continue  # unbalanced: re.compile reports it
            inner = frames.pop()
            group_inner = inner.unbounded_inside
            frames[-1].unbounded_inside |= inner.unbounded_inside
            prev = ("group", inner.starts_at_start)
            frames[-1].at_start = False
            continue
        if ch == "|":
            frame.at_start = frame.starts_at_start
            prev, i = None, i + 1
            continue
        if ch in "^$":
            if ch == "^":
                frame.at_start = False
            i += 1
            continue
        counted = _QUANTIFIER.match(pattern, i) if ch == "{" else None
        if ch in "*+?" or counted:
            if counted:
                high: int | None
                if counted.group(2) is None:
                    high = int(counted.group(1) or 0)
                else:
                    high = int(counted.group(3)) if counted.group(3) else None
                i = counted.end()
            else:
                high = 1 if ch == "?" else None
                i += 1
            if i < n and pattern[i] in "+?":
                i += 1  # possessive or lazy: same reach
            if prev is None:
                continue  # nothing to repeat: re.compile reports it
            what, started = prev
            repeats = high is None or high > 1
            if what == "group" and group_inner and repeats:
                problems.append(
                    "repeats a group that itself contains an unbounded repeat "
                    "(nested quantifiers can hang on long messages); use {gap}"
                )
            elif high is None and what in ("group", "gap"):
                problems.append("repeats a group without an upper bound; write e.g. {0,3}")
            elif high is None and what == "other":
                problems.append(
                    "has an unbounded repeat that can run across words; "
                    "use {gap} or a bounded count like {0,20}"
                )
            elif high is None and started:
                problems.append(
                    "starts with an unbounded repeat, which is slow on long words; "
                    "begin with a fixed letter or \\b"
                )
            if high is None:
                frames[-1].unbounded_inside = True
            prev = None
            continue
        if ch != "." and (problem := _literal_problem(ch)):
            problems.append(problem)
        prev = ("word" if ch.isalnum() else "other", frame.at_start)
        frame.at_start = False
        i += 1
    return list(dict.fromkeys(problems))


# --- rules ---------------------------------------------------------------------------


def _merged(spans: Iterator[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


@dataclass(frozen=True)
class _Rule:
    id: str
    kind: CrisisKind
    lang: str
    patterns: tuple[re.Pattern[str], ...]
    unless: tuple[re.Pattern[str], ...]

    def matches(self, text: str) -> bool:
        """True if some pattern matches a stretch of `text` that no `unless` match overlaps."""
        cancelled: list[tuple[int, int]] | None = None
        starts: list[int] = []
        for pattern in self.patterns:
            position = 0
            while (found := pattern.search(text, position)) is not None:
                if not self.unless:
                    return True
                if cancelled is None:
                    cancelled = _merged(m.span() for u in self.unless for m in u.finditer(text))
                    starts = [start for start, _ in cancelled]
                before = bisect.bisect_left(starts, found.end()) - 1
                if before < 0 or cancelled[before][1] <= found.start():
                    return True
                position = found.start() + 1
        return False


def _as_strings(value: object) -> list[str] | None:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return cast(list[str], value)
    return None


def _compile(
    where: str, field: str, patterns: list[str], problems: list[str]
) -> list[re.Pattern[str]]:
    compiled: list[re.Pattern[str]] = []
    for source in patterns:
        prefix = f"{where}: {field} {source!r}"
        try:
            regex = re.compile(_for_padded_text(_expand_gaps(source)))
        except re.error as exc:
            problems.append(f"{prefix} is not a valid regex: {exc}")
            continue
        lint = pattern_problems(source)
        if "{gap" in _expand_gaps(source):
            lint.append("uses {gap} without a space on each side (write 'a {gap} b')")
        if any(m is not None and m.group() == "" for m in map(regex.search, (" ", " a", " a b"))):
            lint.append("can match empty text, so it would match every message")
        problems.extend(f"{prefix} {problem}" for problem in lint)
        compiled.append(regex)
    return compiled


def _parse_rule(
    path: Path, index: int, raw: object, seen: set[str], problems: list[str]
) -> _Rule | None:
    where = f"{path}: rule #{index}"
    if not isinstance(raw, dict):
        problems.append(f"{where}: is not a mapping with id, kind, lang and patterns")
        return None
    entry = cast(dict[str, Any], raw)
    before = len(problems)
    rule_id = entry.get("id")
    if not isinstance(rule_id, str) or not _RULE_ID.fullmatch(rule_id):
        problems.append(f"{where}: id missing or not lower_snake_case")
    else:
        where = f"{path}: rule {rule_id!r}"
        if rule_id in seen:
            problems.append(f"{where}: id is used twice")
        seen.add(rule_id)
    for key in sorted(set(map(str, entry)) - _RULE_KEYS):
        problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(_RULE_KEYS))})")
    kind = entry.get("kind")
    if kind is None:
        problems.append(f"{where}: kind missing (one of {', '.join(KINDS)})")
    elif kind not in KINDS:
        problems.append(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
    lang = entry.get("lang")
    if lang not in LANGS:
        problems.append(f"{where}: lang {lang!r} is not one of {', '.join(LANGS)}")
    patterns = _as_strings(entry.get("patterns"))
    if not patterns:
        problems.append(f"{where}: patterns must be a non-empty list of strings")
        patterns = []
    unless = _as_strings(entry.get("unless", []))
    if unless is None:
        problems.append(f"{where}: unless must be a list of strings")
        unless = []
    compiled = _compile(where, "pattern", patterns, problems)
    exceptions = _compile(where, "unless", unless, problems)
    if len(problems) > before:
        return None
    return _Rule(
        str(rule_id), cast(CrisisKind, kind), str(lang), tuple(compiled), tuple(exceptions)
    )


def _read(path: Path) -> tuple[list[_Rule], list[str]]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return [], [f"{path}: cannot be read ({exc.strerror or exc}); restore it from git"]
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        return [], [f"{path}: is not valid YAML: {detail}"]
    except (UnicodeDecodeError, RecursionError) as exc:
        return [], DataError.unreadable(str(path), exc).problems
    if not isinstance(raw, list) or not raw:
        return [], [f"{path}: must be a non-empty list of rules"]
    problems: list[str] = []
    seen: set[str] = set()
    rules = [_parse_rule(path, n, entry, seen, problems) for n, entry in enumerate(raw, 1)]
    return [rule for rule in rules if rule is not None], problems


class CrisisRules:
    """A validated, compiled rule set. Build it with `load`; share it, it is read-only."""

    def __init__(self, rules: Sequence[_Rule]) -> None:
        self._rules = sorted(rules, key=lambda rule: KINDS.index(rule.kind))

    @classmethod
    def load(cls, path: Path) -> CrisisRules:
        """Read and compile a rules file, or raise DataError listing every problem in it."""
        rules, problems = _read(path)
        if problems:
            raise DataError(problems)
        return cls(rules)

    @staticmethod
    def problems(path: Path) -> list[str]:
        """Every problem in a rules file, for `hulpwijzer check`; empty when it is fine."""
        return _read(path)[1]

    @property
    def rule_ids(self) -> tuple[str, ...]:
        return tuple(rule.id for rule in self._rules)

    def detect(self, text: str) -> Crisis | None:
        """The first matching rule, suicide rules before danger rules; None if nothing matches."""
        padded = [" " + spelling for spelling in _spellings(text) if spelling]
        for rule in self._rules:
            if any(rule.matches(spelling) for spelling in padded):
                return Crisis(rule.kind, rule.id)
        return None


@functools.cache
def default_rules() -> CrisisRules:
    """The shipped rules, loaded once per process."""
    return CrisisRules.load(RULES_PATH)


def detect_crisis(text: str) -> Crisis | None:
    """What channels and the engine call: the shipped rules applied to one message."""
    return default_rules().detect(text)
