"""Letters: every kind in both languages, the DSA art. 16 elements, the anonymous notice for
child sexual abuse material, input validation, injection safety and the CLI."""

from __future__ import annotations

import argparse
import io
import logging
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.directory import Directory, load_directory
from bot.errors import DataError
from bot.letters import (
    DEFAULT_TEMPLATES_DIR,
    KINDS,
    MAX_URLS,
    SITUATIONS,
    Letter,
    LetterInputError,
    LetterRequest,
    add_letter_arguments,
    article_for,
    asks_identity,
    check_templates,
    clean_text,
    cmd_letter,
    describe_error,
    draft,
    is_csam_case,
    kinds_for,
    validate_email,
    validate_request,
    validate_url,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
LANGS = ("nl", "en")
CANARY_NAME = "Kanarie Vogelzang"
CANARY_EMAIL = "kanarie.canary@example.org"
URL = "https://example.org/post/123?x=1"

GOOD_FAITH = {"nl": "te goeder trouw", "en": "in good faith"}
NAME_LABEL = {"nl": "Naam:", "en": "Name:"}
EMAIL_LABEL = {"nl": "E-mailadres:", "en": "E-mail address:"}
PLACEHOLDER_NAME = {"nl": "[jouw naam]", "en": "[your name]"}
PLACEHOLDER_EMAIL = {"nl": "[jouw e-mailadres]", "en": "[your e-mail address]"}
PLACEHOLDER_URLS = {"nl": "[plak hier de webadres(sen)]", "en": "[paste the web address(es) here]"}


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(DATA)


def applicable() -> list[tuple[str, str, bool]]:
    """(kind, situation, minor) for every letter that fits a situation."""
    return [
        (kind, situation, minor)
        for situation in SITUATIONS
        for minor in (False, True)
        for kind in kinds_for(situation, minor)
    ]


def dsa_cases() -> list[tuple[str, bool, str]]:
    return [
        (situation, minor, lang)
        for situation in SITUATIONS
        for minor in (False, True)
        if "dsa" in kinds_for(situation, minor)
        for lang in LANGS
    ]


def everything(letter: Letter) -> str:
    return "\n".join(
        [letter.title, letter.body, letter.filename, letter.send_to, letter.next_steps]
    )


# ------------------------------------------------------------------------------ templates


def test_dutch_and_english_have_the_same_template_files() -> None:
    nl = {p.name for p in (DEFAULT_TEMPLATES_DIR / "nl").glob("*.txt.j2")}
    en = {p.name for p in (DEFAULT_TEMPLATES_DIR / "en").glob("*.txt.j2")}
    assert nl == en
    assert {f"{kind}.txt.j2" for kind in KINDS} <= nl


def test_letter_texts_have_no_problems() -> None:
    assert check_templates() == []


def test_check_templates_reports_a_missing_translation(tmp_path: Path) -> None:
    folder = tmp_path / "letters"
    shutil.copytree(DEFAULT_TEMPLATES_DIR, folder)
    (folder / "en" / "evidence.txt.j2").unlink()
    problems = check_templates(folder)
    assert any("evidence.txt.j2" in problem for problem in problems)


# ------------------------------------------------------------------ every kind, every case


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize(("kind", "situation", "minor"), applicable())
def test_every_letter_renders_completely(
    directory: Directory, kind: str, situation: str, minor: bool, lang: str
) -> None:
    platform = "instagram" if kind in ("dsa", "avg") else None
    letter = draft(
        LetterRequest(
            kind=kind,  # type: ignore[arg-type]
            situation=situation,
            lang=lang,
            platform=platform,
            urls=(URL,),
            minor=minor,
        ),
        directory,
    )
    assert letter.kind == kind and letter.lang == lang
    assert letter.title and letter.body.strip() and letter.send_to and letter.next_steps
    text = everything(letter)
    assert "{{" not in text and "{%" not in text and "None" not in text
    assert re.fullmatch(r"[a-z0-9-]+\.txt", letter.filename)
    assert letter.body.endswith("\n") and "\n\n\n" not in letter.body
    if kind != "evidence":
        assert URL in letter.body


def test_letters_not_offered_for_a_situation_are_refused(directory: Directory) -> None:
    for situation in SITUATIONS:
        for minor in (False, True):
            for kind in set(KINDS) - set(kinds_for(situation, minor)):
                request = LetterRequest(kind=kind, situation=situation, lang="nl", minor=minor)
                with pytest.raises(LetterInputError) as caught:
                    draft(request, directory)
                assert caught.value.key == "kind_not_applicable"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("platform", ["instagram", "snapchat", "discord", "google", "other"])
def test_dsa_notice_for_each_kind_of_platform(
    directory: Directory, platform: str, lang: str
) -> None:
    letter = draft(
        LetterRequest(kind="dsa", situation="image_abuse", lang=lang, platform=platform),
        directory,
    )
    assert letter.filename.endswith(f"-{platform}.txt")
    route = directory.platforms[platform].routes["image_abuse"]
    assert route.how.get(lang) in letter.send_to
    if route.url:
        assert f"https://{route.url}" in letter.send_to


# -------------------------------------------------------------------- DSA art. 16 elements


@pytest.mark.parametrize(("situation", "minor", "lang"), dsa_cases())
def test_dsa_notice_has_the_four_article_16_elements(
    directory: Directory, situation: str, minor: bool, lang: str
) -> None:
    letter = draft(
        LetterRequest(
            kind="dsa",
            situation=situation,
            lang=lang,
            platform="tiktok",
            urls=(URL, "https://example.org/other"),
            name=CANARY_NAME,
            email=CANARY_EMAIL,
            minor=minor,
        ),
        directory,
    )
    body = letter.body
    # (b) the exact web addresses
    assert URL in body and "https://example.org/other" in body
    # (a) a substantiated explanation that names the article
    laws = article_for(situation, minor)
    if laws:
        for law_id in laws:
            assert directory.laws[law_id].article in body
    else:  # impersonation: no criminal article in the facts; GDPR art. 17 instead
        assert situation == "impersonation"
        assert "17" in body and ("AVG" in body or "GDPR" in body)
    # (c) name and e-mail, or the anonymous variant for child sexual abuse material
    if is_csam_case(situation, minor):
        assert CANARY_NAME not in everything(letter)
        assert CANARY_EMAIL not in everything(letter)
        assert NAME_LABEL[lang] not in body and EMAIL_LABEL[lang] not in body
        assert ("anoniem" if lang == "nl" else "anonymous") in body
        assert directory.laws["252"].article in body
    else:
        assert f"{NAME_LABEL[lang]} {CANARY_NAME}" in body
        assert f"{EMAIL_LABEL[lang]} {CANARY_EMAIL}" in body
        assert ("artikel 20" if lang == "nl" else "article 20") in body
    # (d) the good-faith statement
    assert GOOD_FAITH[lang] in body
    # the requests: remove and prevent re-uploads
    assert ("opnieuw" if lang == "nl" else "again") in body


@pytest.mark.parametrize("lang", LANGS)
def test_dsa_notice_keeps_placeholders_when_nothing_personal_is_typed(
    directory: Directory, lang: str
) -> None:
    letter = draft(
        LetterRequest(kind="dsa", situation="doxing", lang=lang, platform="x"), directory
    )
    assert PLACEHOLDER_NAME[lang] in letter.body
    assert PLACEHOLDER_EMAIL[lang] in letter.body
    assert PLACEHOLDER_URLS[lang] in letter.body


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("kind", ["dsa", "delist", "aangifte", "evidence"])
@pytest.mark.parametrize("situation", ["image_abuse", "sextortion"])
def test_a_minors_image_case_never_has_name_or_email(
    directory: Directory, kind: str, situation: str, lang: str
) -> None:
    assert not asks_identity(kind, situation, True)
    request = LetterRequest(
        kind=kind,  # type: ignore[arg-type]
        situation=situation,
        lang=lang,
        platform="snapchat",
        name=CANARY_NAME,
        email=CANARY_EMAIL,
        minor=True,
    )
    cleaned = validate_request(request, directory)
    assert cleaned.name is None and cleaned.email is None
    letter = draft(request, directory)
    text = everything(letter)
    assert CANARY_NAME not in text and CANARY_EMAIL not in text
    assert PLACEHOLDER_NAME[lang] not in text and PLACEHOLDER_EMAIL[lang] not in text
    if kind in ("dsa", "delist", "aangifte"):
        assert "art. 252 Sr" in letter.body
    assert "avg" not in kinds_for(situation, True)


def test_a_template_that_prints_a_missing_name_fails_instead_of_leaking(
    directory: Directory, tmp_path: Path
) -> None:
    folder = tmp_path / "letters"
    shutil.copytree(DEFAULT_TEMPLATES_DIR, folder)
    template = folder / "nl" / "dsa.txt.j2"
    template.write_text(template.read_text(encoding="utf-8") + "{{ name }}\n", encoding="utf-8")
    request = LetterRequest(kind="dsa", situation="image_abuse", lang="nl", minor=True)
    with pytest.raises(DataError):
        draft(request, directory, folder)


def test_articles_per_situation() -> None:
    assert article_for("image_abuse", False) == ["139h"]
    assert article_for("image_abuse", True) == ["252"]
    assert article_for("sextortion", False) == ["318", "317"]
    assert article_for("sextortion", True) == ["318", "317", "252"]
    assert article_for("doxing", False) == ["285d"]
    assert article_for("stalking", False) == ["285b"]
    assert article_for("threat", False) == ["285"]
    assert article_for("bullying", False) == ["261", "262"]
    assert article_for("impersonation", False) == []
    assert article_for("other", True) == []
    with pytest.raises(LetterInputError):
        article_for("nonsense", False)


def test_every_cited_article_exists_in_laws_yml(directory: Directory) -> None:
    for situation in SITUATIONS:
        for minor in (False, True):
            assert set(article_for(situation, minor)) <= set(directory.laws)


def test_a_missing_article_is_an_operator_error(directory: Directory) -> None:
    laws = {key: law for key, law in directory.laws.items() if key != "285d"}
    broken = replace(directory, laws=laws)
    with pytest.raises(DataError) as caught:
        draft(LetterRequest(kind="dsa", situation="doxing", lang="nl"), broken)
    assert "285d" in str(caught.value)


def test_an_unverified_dsa_contact_is_never_shown(directory: Directory) -> None:
    snapchat = directory.platforms["snapchat"]
    unchecked = snapchat.model_copy(update={"verified": False, "unverified": ("dsa_contact",)})
    shown = draft(
        LetterRequest(kind="dsa", situation="image_abuse", lang="en", platform="snapchat"),
        directory,
    )
    assert "dsa-enquiries@snapchat.com" in shown.send_to
    hidden_dir = replace(directory, platforms={**directory.platforms, "snapchat": unchecked})
    hidden = draft(
        LetterRequest(kind="dsa", situation="image_abuse", lang="en", platform="snapchat"),
        hidden_dir,
    )
    assert "dsa-enquiries@snapchat.com" not in everything(hidden)


# ------------------------------------------------------------------------ the other kinds


@pytest.mark.parametrize("lang", LANGS)
def test_avg_request_has_grounds_deadline_and_escalation(directory: Directory, lang: str) -> None:
    letter = draft(
        LetterRequest(
            kind="avg",
            situation="doxing",
            lang=lang,
            platform="other",
            name=CANARY_NAME,
            email=CANARY_EMAIL,
            urls=(URL,),
            minor=True,
        ),
        directory,
    )
    body, steps = letter.body, letter.next_steps
    assert URL in body and CANARY_NAME in body and CANARY_EMAIL in body
    if lang == "nl":
        assert "artikel 17" in body and "artikel 12 lid 3" in body
        assert "één maand" in body and "twee maanden" in body
        assert "toestemming" in body and "onrechtmatig" in body and "kind" in body
        assert "binnen 6 weken" in steps
    else:
        assert "article 17" in body and "article 12(3)" in body
        assert "one month" in body and "two months" in body
        assert "consent" in body and "unlawfully" in body and "child" in body
        assert "within 6 weeks" in steps
    assert "Autoriteit Persoonsgegevens" in body and "Autoriteit Persoonsgegevens" in steps
    assert "35" in body and "35 UAVG" in steps
    assert "art. 285d Sr" in body


def test_avg_request_for_an_adult_has_no_child_ground(directory: Directory) -> None:
    letter = draft(LetterRequest(kind="avg", situation="impersonation", lang="en"), directory)
    assert "child" not in letter.body


@pytest.mark.parametrize("lang", LANGS)
def test_delisting_names_googles_forms_and_bing_without_a_bing_link(
    directory: Directory, lang: str
) -> None:
    letter = draft(
        LetterRequest(kind="delist", situation="image_abuse", lang=lang, urls=(URL,)), directory
    )
    assert "https://support.google.com/websearch/answer/6302812" in letter.send_to
    assert "https://support.google.com/websearch/answer/9116649" in letter.send_to
    assert "Bing" in letter.send_to and "bing.com" not in everything(letter)
    assert "art. 139h Sr (oud)" in letter.body
    assert "StopNCII" in letter.next_steps


@pytest.mark.parametrize("lang", LANGS)
def test_aangifte_sheet(directory: Directory, lang: str) -> None:
    letter = draft(
        LetterRequest(
            kind="aangifte",
            situation="stalking",
            lang=lang,
            platform="instagram",
            urls=(URL,),
            usernames=("@stalker_account",),
            when="2026-10-01 21:00",
        ),
        directory,
    )
    body = letter.body
    for fact in ("0900-8844", "0900-0101", "112", "Slachtofferhulp", "art. 285b Sr"):
        assert fact in body
    assert "@stalker_account" in body and "2026-10-01 21:00" in body and URL in body
    assert "klachtdelict" in body  # complaint offence, in both languages
    assert "13" not in body  # only for a minor
    if lang == "nl":
        assert "identiteitsbewijs" in body and "melding" in body.lower()
        assert "iemand meenemen" in body
        assert "Online aangifte doen kan hiervoor niet" in body
    else:
        assert "ID" in body and "melding" in body.lower()
        assert "bring someone" in body
        assert "can't report this online" in body


@pytest.mark.parametrize("lang", LANGS)
def test_aangifte_sheet_for_a_minor_and_a_non_complaint_offence(
    directory: Directory, lang: str
) -> None:
    letter = draft(
        LetterRequest(kind="aangifte", situation="threat", lang=lang, minor=True), directory
    )
    assert "13" in letter.body and "klachtdelict" not in letter.body
    sextortion = draft(LetterRequest(kind="aangifte", situation="sextortion", lang=lang), directory)
    assert "art. 318 Sr" in sextortion.body and "klachtdelict" in sextortion.body


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("situation", SITUATIONS)
def test_evidence_checklist(directory: Directory, situation: str, lang: str) -> None:
    adult = draft(LetterRequest(kind="evidence", situation=situation, lang=lang), directory)
    first = "Eerst bewijs, dan pas verwijderen" if lang == "nl" else "Evidence first"
    assert first in adult.body
    for item in (
        ("webadres", "gebruikersnaam", "datum", "tijd")
        if lang == "nl"
        else ("web address", "username", "date", "time")
    ):
        assert item in adult.body
    never = "GEEN schermafbeelding" if lang == "nl" else "NOT take a screenshot"
    assert never not in adult.body
    minor = draft(
        LetterRequest(kind="evidence", situation=situation, lang=lang, minor=True), directory
    )
    if is_csam_case(situation, True):
        assert never in minor.body
        assert ("NOOIT door" if lang == "nl" else "NEVER forward") in minor.body
        assert "Meldpunt Kinderporno" in minor.next_steps


def test_evidence_checklist_carries_the_platforms_notes(directory: Directory) -> None:
    letter = draft(
        LetterRequest(kind="evidence", situation="bullying", lang="en", platform="discord"),
        directory,
    )
    for note in directory.platforms["discord"].notes.en:
        assert note in letter.body


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("ftp://example.org/file", "url_invalid"),
        ("javascript:alert(1)", "url_invalid"),
        ("JavaScript://example.org/%0aalert(1)", "url_invalid"),
        ("data:text/html,<script>alert(1)</script>", "url_invalid"),
        ("file:///etc/passwd", "url_invalid"),
        ("example.org/no-scheme", "url_invalid"),
        ("https://", "url_invalid"),
        ("https://localhost/x", "url_invalid"),
        ("https://exa mple.org/", "url_invalid"),
        ("https://user:secret@example.org/", "url_invalid"),
        ("https://example.org:99999/", "url_invalid"),
        ("https://-bad.example.org/", "url_invalid"),
        ("https://example.123/", "url_invalid"),
        ("", "url_invalid"),
        ("https://example.org/\x00", "control_chars"),
        ("https://example.org/\x1b[31m", "control_chars"),
        ("https://example.org/\u202eexe.gpj", "control_chars"),
        ("https://example.org/" + "a" * 2000, "too_long"),
    ],
)
def test_validate_url_rejects(value: str, key: str) -> None:
    with pytest.raises(LetterInputError) as caught:
        validate_url(value)
    assert caught.value.key == key
    if value.strip():
        assert value not in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        "https://www.instagram.com/p/AbC123/?igsh=x#frag",
        "http://192.168.1.10/page",
        "https://[2001:db8::1]/a",
        "https://bücher.example/",
        "HTTPS://EXAMPLE.ORG",
        "https://example.org/{{7*7}}/<script>",
    ],
)
def test_validate_url_accepts(value: str) -> None:
    assert validate_url(f"  {value} \n") == value


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("plainaddress", "email_invalid"),
        ("a@b", "email_invalid"),
        ("a@@example.org", "email_invalid"),
        ("a b@example.org", "email_invalid"),
        (".a@example.org", "email_invalid"),
        ("a..b@example.org", "email_invalid"),
        ("a@192.168.1.1", "email_invalid"),
        ("a@example.org\x1b", "control_chars"),
        ("a" * 250 + "@example.org", "too_long"),
    ],
)
def test_validate_email_rejects(value: str, key: str) -> None:
    with pytest.raises(LetterInputError) as caught:
        validate_email(value)
    assert caught.value.key == key
    assert value not in str(caught.value)


def test_validate_email_accepts() -> None:
    assert validate_email(" x.y+z@example.co.uk ") == "x.y+z@example.co.uk"


def test_clean_text() -> None:
    assert clean_text("  Sam\x1b[31m \u202eDe\u200eVries\x00 ", 100) == "Sam[31m DeVries"
    assert clean_text("line\none\ttab", 100) == "line one tab"
    assert clean_text("Jose\u0301", 100) == "José"
    assert clean_text("{{ 7*7 }}", 100) == "{{ 7*7 }}"
    with pytest.raises(LetterInputError) as caught:
        clean_text("x" * 101, 100)
    assert caught.value.key == "too_long"
    with pytest.raises(LetterInputError):
        clean_text("x" * 10_000_000, 100)


@given(st.text())
def test_clean_text_leaves_no_control_or_bidi_characters(value: str) -> None:
    try:
        cleaned = clean_text(value, 1000)
    except LetterInputError as error:
        assert error.key == "too_long"
        return
    assert all(ch == " " or not ch.isspace() for ch in cleaned)
    assert not any(ord(ch) < 32 or ord(ch) == 127 or "\u202a" <= ch <= "\u202e" for ch in cleaned)
    assert cleaned == cleaned.strip()


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"urls": tuple(f"https://example.org/{i}" for i in range(MAX_URLS + 1))}, "too_many_urls"),
        ({"urls": ("javascript:alert(1)",)}, "url_invalid"),
        ({"urls": ("https://example.org/\x07",)}, "control_chars"),
        ({"email": "not-an-email"}, "email_invalid"),
        ({"name": "x" * 101}, "too_long"),
        ({"details": "x" * 5000}, "too_long"),
        ({"usernames": tuple(f"@u{i}" for i in range(11))}, "too_many_usernames"),
        ({"platform": "myspace"}, "unknown_platform"),
        ({"kind": "love_letter"}, "unknown_kind"),
        ({"lang": "de"}, "unknown_language"),
        ({"situation": "weather"}, "unknown_situation"),
    ],
)
def test_validate_request_rejects(directory: Directory, change: dict[str, Any], key: str) -> None:
    request = replace(LetterRequest(kind="dsa", situation="doxing", lang="nl"), **change)
    with pytest.raises(LetterInputError) as caught:
        validate_request(request, directory)
    assert caught.value.key == key


def test_validate_request_cleans_and_is_idempotent(directory: Directory) -> None:
    request = LetterRequest(
        kind="dsa",
        situation="doxing",
        lang="en",
        platform=" Instagram ",
        urls=(URL, f" {URL} "),
        name="  Sam\n",
        email=" sam@example.org ",
        usernames=("@a", " @a", ""),
        when="  ",
        details=None,
    )
    cleaned = validate_request(request, directory)
    assert cleaned.platform == "instagram"
    assert cleaned.urls == (URL,)
    assert cleaned.name == "Sam" and cleaned.email == "sam@example.org"
    assert cleaned.usernames == ("@a",) and cleaned.when is None
    assert validate_request(cleaned, directory) == cleaned
    assert (
        validate_request(
            LetterRequest(kind="avg", situation="doxing", lang="nl"), directory
        ).platform
        == "other"
    )


def test_every_error_key_has_one_sentence_in_both_languages() -> None:
    keys = [
        "url_invalid",
        "email_invalid",
        "too_long",
        "too_many_urls",
        "too_many_usernames",
        "unknown_platform",
        "control_chars",
        "unknown_kind",
        "unknown_situation",
        "unknown_language",
        "kind_not_applicable",
    ]
    for lang in LANGS:
        sentences = [describe_error(LetterInputError(key), lang) for key in keys]
        assert len(set(sentences)) == len(keys)
        assert all(s and "\n" not in s and s.endswith(".") for s in sentences)


def test_nothing_personal_is_logged(directory: Directory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    draft(
        LetterRequest(
            kind="dsa",
            situation="doxing",
            lang="nl",
            name=CANARY_NAME,
            email=CANARY_EMAIL,
            urls=(URL,),
        ),
        directory,
    )
    with pytest.raises(LetterInputError):
        draft(
            LetterRequest(
                kind="dsa",
                situation="doxing",
                lang="nl",
                name=CANARY_NAME,
                email="bad " + CANARY_EMAIL,
            ),
            directory,
        )
    assert CANARY_NAME not in caplog.text and CANARY_EMAIL not in caplog.text


# ------------------------------------------------------------------------------ injection

INJECTIONS = [
    "{{ 7*7 }}",
    "{% include 'dsa.txt.j2' %}",
    "{{ ''.__class__.__mro__ }}",
    "{# comment #}",
    "<script>alert(1)</script>",
    "\x1b[31mred\x1b[0m",
    "\u202eevil",
    "line1\nNaam: vervalst\n4. Verklaring",
]


def _render_with(directory: Directory, lang: str, **fields: Any) -> Letter:
    base: dict[str, Any] = {
        "kind": "dsa",
        "situation": "doxing",
        "lang": lang,
        "platform": "x",
        "urls": (URL,),
        "name": "Sam",
        "email": "sam@example.org",
    }
    base.update(fields)
    return draft(LetterRequest(**base), directory)


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("attack", INJECTIONS)
@pytest.mark.parametrize("field", ["name", "details", "when"])
def test_typed_text_never_changes_the_letter(
    directory: Directory, field: str, attack: str, lang: str
) -> None:
    sentinel = "SENTINELVALUE"
    baseline = _render_with(directory, lang, **{field: sentinel})
    attacked = _render_with(directory, lang, **{field: attack})
    cleaned = clean_text(attack, 1000)
    assert attacked.body == baseline.body.replace(sentinel, cleaned)
    assert "49" not in attacked.body
    assert "\x1b" not in attacked.body and "\u202e" not in attacked.body


@pytest.mark.parametrize("lang", LANGS)
def test_template_syntax_in_a_url_stays_literal(directory: Directory, lang: str) -> None:
    url = "https://example.org/{{7*7}}/{%include%}/<script>"
    baseline = _render_with(directory, lang, urls=("https://example.org/SENTINEL",))
    attacked = _render_with(directory, lang, urls=(url,))
    assert attacked.body == baseline.body.replace("https://example.org/SENTINEL", url)
    with pytest.raises(LetterInputError):
        _render_with(directory, lang, urls=("https://example.org/{{ 7*7 }}",))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=120), username=st.text(max_size=60))
def test_any_typed_name_is_inserted_as_text_only(
    directory: Directory, name: str, username: str
) -> None:
    try:
        cleaned_name = clean_text(name, 100)
        cleaned_user = clean_text(username, 200)
    except LetterInputError:
        return
    if not cleaned_name or not cleaned_user:
        return
    baseline = _render_with(directory, "en", name="SENTINELNAME", usernames=("SENTINELUSER",))
    attacked = _render_with(directory, "en", name=name, usernames=(username,))
    expected = baseline.body.replace("SENTINELNAME", cleaned_name).replace(
        "SENTINELUSER", cleaned_user
    )
    assert attacked.body == expected


# ------------------------------------------------------------------------------------ CLI


def _run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_letter_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    status = cmd_letter(parser.parse_args(list(argv)), DATA, out, err)
    return status, out.getvalue(), err.getvalue()


def test_cli_prints_title_body_route_and_next_steps() -> None:
    status, out, err = _run(
        "--kind",
        "dsa",
        "--situation",
        "image_abuse",
        "--platform",
        "snapchat",
        "--lang",
        "nl",
        "--url",
        URL,
        "--name",
        "Sam",
        "--email",
        "sam@example.org",
    )
    assert status == 0 and err == ""
    assert out.startswith("Melding van illegale inhoud aan Snapchat")
    assert URL in out and "Sam" in out
    assert "Waar stuur je het naartoe?" in out and "Wat gebeurt er daarna?" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--kind", "dsa", "--situation", "doxing", "--platform", "myspace"],
        ["--kind", "dsa", "--situation", "doxing", "--url", "ftp://example.org/x"],
        ["--kind", "dsa", "--situation", "doxing", "--url", "javascript:alert(1)"],
        ["--kind", "dsa", "--situation", "doxing", "--email", "nope"],
        ["--kind", "dsa", "--situation", "doxing", "--name", "Sam\x1b" + "x" * 200],
        ["--kind", "dsa", "--situation", "doxing", "--url", "https://example.org/\x07"],
        [
            "--kind",
            "dsa",
            "--situation",
            "doxing",
            *[part for i in range(11) for part in ("--url", f"https://example.org/{i}")],
        ],
        ["--kind", "fax", "--situation", "doxing"],
        ["--situation", "doxing"],
        ["--kind", "dsa", "--situation", "doxing", "--lang", "fr"],
        ["--kind", "avg", "--situation", "image_abuse", "--minor"],
    ],
)
def test_cli_rejects_bad_input_with_one_sentence_and_status_2(argv: list[str]) -> None:
    status, out, err = _run(*argv)
    assert status == 2
    assert out == ""
    assert err.count("\n") == 1 and err.strip().endswith(".")
    for value in ("myspace", "ftp://", "javascript", "nope", "xxxxx", "fax"):
        if any(value in arg for arg in argv):
            assert value not in err


def test_hulpwijzer_letter_subcommand() -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "letter",
            "--kind",
            "aangifte",
            "--situation",
            "threat",
            "--lang",
            "en",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert "0900-8844" in ok.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "bot",
            "letter",
            "--kind",
            "dsa",
            "--situation",
            "doxing",
            "--lang",
            "en",
            "--url",
            "javascript:alert(1)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0 and "javascript" not in bad.stderr
