"""The crisis layer: the phrase table, normalisation, precedence, speed on huge input,
rules-file validation, and that no text can make detection raise."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.errors import DataError
from bot.safety import (
    RULES_PATH,
    Crisis,
    CrisisRules,
    default_rules,
    detect_crisis,
    normalise,
    pattern_problems,
)

CASES = yaml.safe_load((Path(__file__).parent / "data" / "safety_cases.yml").read_text("utf-8"))
CRISIS_CASES: list[dict[str, str]] = CASES["crisis"]
ORDINARY_CASES: list[str] = CASES["ordinary"]


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the phrase table ------------------------------------------------------------------


def test_the_table_is_big_enough_and_covers_both_kinds_and_languages() -> None:
    assert len(CRISIS_CASES) >= 50
    assert len(ORDINARY_CASES) >= 50
    assert {case["kind"] for case in CRISIS_CASES} == {"suicide", "danger"}


@pytest.mark.parametrize("case", CRISIS_CASES, ids=[case["text"] for case in CRISIS_CASES])
def test_crisis_phrasing_triggers_with_its_kind(case: dict[str, str]) -> None:
    found = detect_crisis(case["text"])
    assert found is not None, "no rule matched"
    assert found.kind == case["kind"], f"rule {found.rule} gave {found.kind}"


@pytest.mark.parametrize("text", ORDINARY_CASES, ids=ORDINARY_CASES)
def test_ordinary_sentence_does_not_trigger(text: str) -> None:
    found = detect_crisis(text)
    assert found is None, f"rule {found.rule if found else ''} matched"


def test_every_shipped_rule_is_exercised_by_the_table() -> None:
    hit = {found.rule for case in CRISIS_CASES if (found := detect_crisis(case["text"]))}
    assert set(default_rules().rule_ids) - hit == set()


# --- normalisation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ik Wil DOOD", "ik wil dood"),
        ("i\u200bk w\u200cil d\u200dood\ufeff", "ik wil dood"),  # zero-width space/joiners, BOM
        ("\u202eik wil\u200f dood\u200e\u2066", "ik wil dood"),  # RTL/LTR marks and overrides
        ("suïcide", "suicide"),
        ("Zélfmoord", "zelfmoord"),
        ("dooooood", "dood"),
        ("ik wiiiiil dooood", "ik wiil dood"),
        ("1k w1l d00d", "ik wil dood"),
        ("k1ll mys3lf", "kill myself"),
        ("@ $elf h@rm", "self harm"),
        ("bel 112 of 113", "bel 112 of 113"),  # numbers are not leetspeak
        ("don't", "dont"),
        ("i’m", "im"),
        ("m'n", "mn"),
        ("self-harm!!!", "self harm"),
        ("  ik\t\n wil ...  dood?!  ", "ik wil dood"),
        ("ＩＫ ＷＩＬ ＤＯＯＤ", "ik wil dood"),  # full-width letters
        ("іk wіl dооd", "ik wil dood"),  # Cyrillic look-alikes
        ("ik wil 💀💀💀", "ik wil"),
        ("", ""),
    ],
)
def test_normalise(raw: str, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "disguised",
    [
        "1k w1l d00d",
        "ik\u200b wil\u200b dood",
        "\u200fik wil dood\u200f",
        "IK WIL DOOOOOOD!!!!",
        "ik wil d-o-o-d",
        "ik wil d o o d",
        "Ｉｋ ｗｉｌ ｄｏｏｄ",
        "ik wiiiiil doooood",  # a stretched letter may stand for one or for two
        "ikkkk wiiiil dooooood!!!!",
    ],
)
def test_disguised_crisis_language_is_still_found(disguised: str) -> None:
    assert detect_crisis(disguised) == Crisis("suicide", "nl_wil_dood")


@settings(max_examples=300)
@given(st.text())
def test_normalise_is_idempotent_and_tidy(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert once == once.strip()
    assert "  " not in once


# --- detection -------------------------------------------------------------------------


def test_suicide_wins_over_danger_whatever_the_order_in_the_file(tmp_path: Path) -> None:
    rules = CrisisRules.load(
        write_rules(
            tmp_path,
            """
- {id: outside, kind: danger, lang: en, patterns: ['\\boutside\\b']}
- {id: die, kind: suicide, lang: en, patterns: ['\\bdie\\b']}
""",
        )
    )
    assert rules.detect("he is outside and i want to die") == Crisis("suicide", "die")
    assert rules.detect("he is outside") == Crisis("danger", "outside")
    assert detect_crisis("hij staat nu voor de deur en ik wil dood") == Crisis(
        "suicide", "nl_wil_dood"
    )


def test_unless_cancels_only_the_match_it_overlaps(tmp_path: Path) -> None:
    rules = CrisisRules.load(
        write_rules(
            tmp_path,
            """
- id: ga_dood
  kind: suicide
  lang: nl
  patterns: ['\\bik ga dood\\b']
  unless: ['\\bdood van het lachen\\b']
""",
        )
    )
    assert rules.detect("ik ga dood van het lachen") is None
    assert rules.detect("ik ga dood van het lachen, maar echt: ik ga dood") is not None
    assert rules.detect("ik ga dood") is not None


def test_gap_allows_up_to_n_whole_words(tmp_path: Path) -> None:
    rules = CrisisRules.load(
        write_rules(
            tmp_path,
            """
- {id: three, kind: suicide, lang: nl, patterns: ['\\bik {gap} dood\\b']}
- {id: one, kind: danger, lang: nl, patterns: ['\\bhij {gap:1} hier\\b']}
""",
        )
    )
    assert rules.detect("ik dood") == Crisis("suicide", "three")
    assert rules.detect("ik wil echt heel dood") == Crisis("suicide", "three")
    assert rules.detect("ik wil echt heel erg dood") is None
    assert rules.detect("ikwil dood") is None
    assert rules.detect("hij is hier") == Crisis("danger", "one")
    assert rules.detect("hij is nu hier") is None


def test_crisis_names_a_rule_never_the_message() -> None:
    text = "ik wil dood, mijn naam is Sanne de Vries"
    found = detect_crisis(text)
    assert found is not None
    assert found.rule in default_rules().rule_ids
    assert "Sanne" not in repr(found)


def test_default_rules_are_loaded_once_and_ship_without_problems() -> None:
    assert default_rules() is default_rules()
    assert CrisisRules.problems(RULES_PATH) == []


def test_empty_and_blank_text_is_no_crisis() -> None:
    for text in ("", "   ", "\u200b\u200f", "!!!", "💀"):
        assert detect_crisis(text) is None


ADVERSARIAL = {
    "one long word": "a" * 100_000,
    "stretched letters": "d" + "o" * 99_998 + "d",
    "repeated prefix": "ik " * 33_334,
    "repeated verb phrase": "ik wil " * 14_286,
    "english prefix": "i want to " * 10_000,
    "idiom cancelled many times": "ik ga dood van het lachen " * 3_847,
    "glued keyword": "zelfmoord" * 11_112,
    "glued slang": "kys" * 33_334,
    "subject and verb": "hij staat " * 10_000,
    "contractions": "hes on the " * 9_091,
    "leetspeak": "a1" * 50_000,
    "zero-width": "\u200b" * 100_000,
    "combining accents": "a" + "\u0301" * 99_999,
    "emoji": "💀" * 100_000,
    "gap filler": "ik wil " + "x " * 50_000,
    "short words": "a b c d e f " * 8_334,
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_a_100k_character_message_is_checked_quickly(text: str) -> None:
    assert len(text) >= 99_999
    start = time.perf_counter()
    detect_crisis(text)
    assert time.perf_counter() - start < 2.0


def test_a_crisis_at_the_end_of_a_huge_message_is_found() -> None:
    text = "bla " * 25_000 + "ik wil dood"
    assert detect_crisis(text) == Crisis("suicide", "nl_wil_dood")


@settings(max_examples=300)
@given(st.text())
def test_detect_never_raises(text: str) -> None:
    found = detect_crisis(text)
    assert found is None or found.kind in ("suicide", "danger")


@settings(max_examples=100)
@given(
    st.lists(
        st.sampled_from(
            [
                "ik",
                "wil",
                "dood",
                "niet",
                "meer",
                "i",
                "want",
                "to",
                "die",
                "hij",
                "staat",
                "nu",
                "voor",
                "de",
                "deur",
                "kys",
                "lol",
                "1",
                "'",
                "-",
                "\u200b",
                "van",
                "het",
                "lachen",
            ]
        ),
        max_size=40,
    )
)
def test_detect_never_raises_on_rule_vocabulary(words: list[str]) -> None:
    detect_crisis(" ".join(words))


# --- the rules file --------------------------------------------------------------------


def test_broken_rules_file_reports_every_problem_with_the_path(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
- id: broken_regex
  kind: suicide
  lang: nl
  patterns: ['\\bik wil (dood']
- id: no_kind
  lang: en
  patterns: ['\\bhelp\\b']
""",
    )
    with pytest.raises(DataError) as raised:
        CrisisRules.load(path)
    problems = raised.value.problems
    assert len(problems) == 2
    assert all(str(path) in problem for problem in problems)
    assert any("broken_regex" in p and "not a valid regex" in p for p in problems)
    assert any("no_kind" in p and "kind missing" in p for p in problems)
    assert CrisisRules.problems(path) == problems


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "- {id: a, kind: suicide, lang: nl, patterns: ['x']}\n- {id: a, kind: suicide, "
            "lang: nl, patterns: ['y']}",
            "used twice",
        ),
        ("- {id: a, kind: panic, lang: nl, patterns: ['x']}", "kind 'panic'"),
        ("- {id: a, kind: suicide, lang: fr, patterns: ['x']}", "lang 'fr'"),
        ("- {id: a, kind: suicide, lang: nl}", "patterns must be"),
        ("- {id: a, kind: suicide, lang: nl, patterns: []}", "patterns must be"),
        ("- {id: a, kind: suicide, lang: nl, patterns: ['x'], unless: 'y'}", "unless must be"),
        ("- {id: a, kind: suicide, lang: nl, patterns: ['x'], unles: ['y']}", "unknown key"),
        ("- {id: Bad-Id, kind: suicide, lang: nl, patterns: ['x']}", "lower_snake_case"),
        ("- just a string", "not a mapping"),
        ("{id: a}", "non-empty list"),
        ("- [unclosed", "not valid YAML"),
    ],
)
def test_rules_file_problems_are_named(tmp_path: Path, body: str, expected: str) -> None:
    path = write_rules(tmp_path, body)
    with pytest.raises(DataError) as raised:
        CrisisRules.load(path)
    assert any(expected in p and str(path) in p for p in raised.value.problems), (
        raised.value.problems
    )


def test_missing_rules_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as raised:
        CrisisRules.load(tmp_path / "nope.yml")
    assert "nope.yml" in raised.value.problems[0]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("(a+)+", "nested"),
        ("\\bik (\\w+ )*dood", "nested"),
        ("\\bik (wil )+dood", "without an upper bound"),
        ("\\bik .*dood", "run across words"),
        ("\\bik [^x]+dood", "run across words"),
        ("\\w+dood", "starts with an unbounded repeat"),
        ("\\bDood", "'D'"),
        ("\\bsuïcide", "'ï'"),
        ("\\bdon't", "apostrophes"),
        ("\\bself-harm", "punctuation"),
        ("{gap} dood", "starts with {gap}"),
    ],
)
def test_pattern_guard_rails(pattern: str, expected: str) -> None:
    assert any(expected in problem for problem in pattern_problems(pattern))


@pytest.mark.parametrize(
    "pattern",
    [
        "\\bzelfmoord\\w*",
        "\\bik wil {gap} dood\\b",
        "\\b(ik|k) {gap:2} (wil|wou)\\b",
        "\\b\\d+ ?kms\\b",
        "\\bik wil (gewoon |echt )?niet meer$",
        "\\b(cut|cutting) (my|the) (arms?|legs?)\\b",
        "\\bik (wil ){0,3}dood",
    ],
)
def test_safe_patterns_pass_the_guard_rails(pattern: str) -> None:
    assert pattern_problems(pattern) == []


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("\\bik{gap} dood", "without a space on each side"),
        ("\\bik (wil)?", None),  # matches "ik" alone: fine
        ("(dood)?", "empty text"),
    ],
)
def test_loader_rejects_gap_misuse_and_patterns_matching_everything(
    tmp_path: Path, pattern: str, expected: str | None
) -> None:
    path = write_rules(tmp_path, f"- {{id: a, kind: suicide, lang: nl, patterns: ['{pattern}']}}\n")
    problems = CrisisRules.problems(path)
    if expected is None:
        assert problems == []
    else:
        assert any(expected in problem for problem in problems), problems
