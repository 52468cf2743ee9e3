"""The directory: data matches facts.md, unchecked facts stay hidden, broken data is named."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.directory import Directory, check_directory, load_directory
from bot.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
FACTS_CANDIDATES = [
    Path(os.environ.get("HULPWIJZER_FACTS", "/nonexistent")),
    ROOT / "docs" / "facts.md",
    Path("/work/shared/knowledge/facts.md"),
]


@pytest.fixture(scope="module")
def facts() -> str:
    for candidate in FACTS_CANDIDATES:
        if candidate.is_file():
            return candidate.read_text(encoding="utf-8")
    raise AssertionError("facts.md not found; set HULPWIJZER_FACTS to its path")


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(DATA)


def _table_rows(facts: str, heading: str) -> list[list[str]]:
    """Body rows of the first table under `heading`, as lists of cells."""
    section = facts.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= set("-: "):
            continue
        rows.append(cells)
    return rows[1:]  # drop the header


def _org_rows(facts: str) -> dict[str, list[str]]:
    rows = _table_rows(facts, "## Help organisations")
    return {("zelfmoordpreventie_113" if r[0] == "113" else r[0]): r for r in rows}


def _law_rows(facts: str) -> list[list[str]]:
    return _table_rows(facts, "## Dutch criminal law")


def amsterdam(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("Europe/Amsterdam"))


# --- the shipped data ----------------------------------------------------------------------


def test_shipped_data_has_no_problems() -> None:
    assert check_directory(DATA) == []


def test_every_organisation_in_facts_is_in_the_directory(facts: str, directory: Directory) -> None:
    expected = set(_org_rows(facts)) | {"stopncii", "take_it_down"}
    assert len(expected) == 18
    assert set(directory.organisations) == expected


def test_platform_and_law_ids(facts: str, directory: Directory) -> None:
    assert set(directory.platforms) == {
        "instagram", "facebook", "tiktok", "snapchat", "whatsapp", "telegram", "x",
        "youtube", "discord", "reddit", "pornhub", "onlyfans", "google", "other",
    }  # fmt: skip
    law_ids = {"139h", "252", "251", "317", "318", "285b", "285d", "285", "261", "262",
               "139f", "139g", "441b"}  # fmt: skip
    assert set(directory.laws) == law_ids
    article_cells = " ".join(row[1] for row in _law_rows(facts))
    for law_id in law_ids:
        assert re.search(rf"\b{law_id}\b", article_cells), law_id


def test_known_phone_numbers(directory: Directory) -> None:
    line_113 = directory.organisation("zelfmoordpreventie_113")
    assert {line_113.phone, line_113.phone_alt} == {"113", "0800-0113"}
    assert line_113.phone_free is True
    assert directory.organisation("helpwanted").phone == "020-261 52 75"
    assert directory.organisation("politie").phone == "0900-8844"
    assert directory.organisation("politie_112").phone == "112"
    assert directory.organisation("slachtofferhulp").phone == "0900-0101"
    assert directory.organisation("kindertelefoon").phone == "0800-0432"
    assert directory.organisation("veilig_thuis").phone == "0800-2000"
    assert directory.organisation("csg").phone == "0800-0188"
    assert directory.organisation("meldpunt_kinderporno").whatsapp == "06-42834635"


def test_no_contact_detail_is_invented(facts: str, directory: Directory) -> None:
    """Every number, domain and link the bot can show appears literally in facts.md."""
    shown: list[str] = []
    for org in directory.organisations.values():
        shown += [v for v in (org.phone, org.phone_alt, org.whatsapp, org.web, org.chat) if v]
    for platform in directory.platforms.values():
        shown += [route.url for route in platform.routes.values() if route.url]
        shown += [platform.dsa_contact] if platform.dsa_contact else []
    assert len(shown) > 30
    for value in shown:  # domains are case-insensitive: facts.md writes "StopNCII.org"
        assert value.lower() in facts.lower(), value


def test_phone_numbers_sit_in_their_own_row(facts: str, directory: Directory) -> None:
    rows = _org_rows(facts)
    for org_id, row in rows.items():
        org = directory.organisation(org_id)
        for number in (org.phone, org.phone_alt, org.whatsapp):
            if number:
                assert number in " ".join(row), (org_id, number)


def test_rows_marked_unverified_ship_as_unverified(facts: str, directory: Directory) -> None:
    for org_id, row in _org_rows(facts).items():
        org = directory.organisation(org_id)
        assert org.verified is ("UNVERIFIED" not in " ".join(row)), org_id
    for row in _law_rows(facts):
        for law in directory.laws.values():
            if re.search(rf"\b{law.id}\b", row[1]) and "UNVERIFIED" in row[2]:
                assert law.max_penalty is None, law.id
                assert law.verified is False, law.id
    unchecked_dsa = {"instagram", "facebook", "x", "reddit", "pornhub", "onlyfans"}
    for platform in directory.platforms.values():
        assert (platform.id in unchecked_dsa) is (not platform.verified), platform.id


def test_complaint_offences_follow_facts(facts: str, directory: Directory) -> None:
    assert {law.id for law in directory.laws.values() if law.complaint_offence} == {"285b", "318"}
    for law_id in ("285b", "318"):
        row = next(r for r in _law_rows(facts) if re.search(rf"\b{law_id}\b", r[1]))
        assert "complaint offence" in row[3]


def test_new_number_of_139h_is_not_claimed(directory: Directory) -> None:
    assert directory.law("139h").article == "art. 139h Sr (oud)"


def test_dutch_and_english_texts_differ(directory: Directory) -> None:
    """A Dutch user gets Dutch: the nl text is not a copy of the en text."""
    for org in directory.organisations.values():
        assert org.what.nl != org.what.en, org.id
    for law in directory.laws.values():
        assert law.plain.nl != law.plain.en, law.id
    for platform in directory.platforms.values():
        for situation, route in platform.routes.items():
            assert route.how.nl != route.how.en, (platform.id, situation)
            assert route.how.get("en") == route.how.en


def test_every_platform_has_a_route(directory: Directory) -> None:
    for platform in directory.platforms.values():
        assert platform.routes, platform.id


def test_hash_services_only_where_facts_say_so(directory: Directory) -> None:
    take_it_down = {p.id for p in directory.platforms.values() if p.take_it_down}
    assert take_it_down == {"pornhub", "onlyfans"}
    stopncii = {p.id for p in directory.platforms.values() if p.stopncii}
    assert stopncii == {"instagram", "facebook", "tiktok", "reddit", "snapchat", "onlyfans",
                        "pornhub"}  # fmt: skip
    assert directory.platform("whatsapp").stopncii is False
    assert directory.organisation("stopncii").min_age == 18


def test_lookups_raise_key_error_for_unknown_ids(directory: Directory) -> None:
    with pytest.raises(KeyError):
        directory.organisation("nope")
    with pytest.raises(KeyError):
        directory.platform("myspace")
    with pytest.raises(KeyError):
        directory.law("999")


# --- unverified fields stay hidden ---------------------------------------------------------


def test_unverified_fields_are_hidden(directory: Directory) -> None:
    helpwanted = directory.organisation("helpwanted")
    assert not helpwanted.shows("hours")
    assert helpwanted.shows("phone") and helpwanted.shows("web")
    loket = directory.organisation("juridisch_loket")
    assert not loket.shows("phone") and not loket.shows("hours")
    assert loket.shows("name") and loket.shows("web")
    assert not directory.organisation("fier").shows("removes_content")
    assert not directory.law("318").shows("max_penalty")
    assert directory.law("285b").shows("max_penalty")
    assert not directory.platform("instagram").shows("dsa_contact")
    assert directory.platform("snapchat").shows("dsa_contact")


def test_shows_rejects_a_misspelt_field(directory: Directory) -> None:
    with pytest.raises(KeyError):
        directory.organisation("helpwanted").shows("hours_")


# --- open now ------------------------------------------------------------------------------

NIGHT = amsterdam(2026, 11, 8, 3, 30)  # a Sunday, 03:30


@pytest.mark.parametrize("org_id", ["zelfmoordpreventie_113", "politie_112", "veilig_thuis", "csg"])
def test_round_the_clock_lines_are_open_at_night(directory: Directory, org_id: str) -> None:
    assert directory.organisation(org_id).is_open(NIGHT) is True


@pytest.mark.parametrize(
    "day",
    [
        (2026, 1, 15),  # winter time (CET, UTC+1)
        (2026, 7, 15),  # summer time (CEST, UTC+2)
        (2026, 3, 29),  # the night the clocks go forward
        (2026, 10, 25),  # the night the clocks go back
    ],
)
def test_police_callbacks_start_at_eight_amsterdam_time(
    directory: Directory, day: tuple[int, int, int]
) -> None:
    politie = directory.organisation("politie")
    assert politie.is_open(amsterdam(*day, 7, 59)) is False
    assert politie.is_open(amsterdam(*day, 8, 0)) is True
    assert politie.is_open(amsterdam(*day, 21, 59)) is True
    assert politie.is_open(amsterdam(*day, 22, 0)) is False


def test_utc_and_naive_times_are_converted(directory: Directory) -> None:
    politie = directory.organisation("politie")
    # 06:30 UTC is 07:30 in winter (closed) but 08:30 in summer (open).
    assert politie.is_open(datetime(2026, 1, 15, 6, 30, tzinfo=UTC)) is False
    assert politie.is_open(datetime(2026, 7, 15, 6, 30, tzinfo=UTC)) is True
    assert politie.is_open(datetime(2026, 7, 15, 6, 30)) is True  # naive means UTC
    new_york = timezone(timedelta(hours=-4))
    assert politie.is_open(datetime(2026, 7, 15, 2, 30, tzinfo=new_york)) is True


def test_weekday_only_service_is_closed_at_the_weekend(directory: Directory) -> None:
    mod = directory.organisation("meld_online_discriminatie")
    assert mod.is_open(amsterdam(2026, 11, 6, 10, 0)) is True  # Friday
    assert mod.is_open(amsterdam(2026, 11, 7, 10, 0)) is False  # Saturday
    assert mod.is_open(amsterdam(2026, 11, 6, 17, 0)) is False


@pytest.mark.parametrize("org_id", ["helpwanted", "kindertelefoon", "slachtofferhulp", "offlimits"])
def test_unknown_or_unchecked_hours_give_no_answer(directory: Directory, org_id: str) -> None:
    org = directory.organisation(org_id)
    for hour in (3, 12, 15, 20):
        assert org.is_open(amsterdam(2026, 11, 4, hour, 0)) is None


# --- broken data ---------------------------------------------------------------------------


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    for name in ("organisations.yml", "platforms.yml", "laws.yml"):
        shutil.copy(DATA / name, tmp_path / name)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _problems(data_dir: Path) -> list[str]:
    with pytest.raises(DataError) as caught:
        load_directory(data_dir)
    assert caught.value.problems == check_directory(data_dir)
    return caught.value.problems


def test_bad_yaml_names_file_and_line(broken: Path) -> None:
    laws = broken / "laws.yml"
    laws.write_text(laws.read_text(encoding="utf-8") + "- id: [oops\n", encoding="utf-8")
    (problem,) = _problems(broken)
    assert problem.startswith(f"{laws}: line ")
    assert "YAML" in problem


def test_missing_source_names_the_entry(broken: Path) -> None:
    orgs = broken / "organisations.yml"
    _edit(orgs, "  source: helpwanted.nl/en; offlimits.nl news 2023-07-13\n", "")
    (problem,) = _problems(broken)
    assert problem.startswith(f"{orgs}: helpwanted: source: field required")


def test_duplicate_id(broken: Path) -> None:
    platforms = broken / "platforms.yml"
    _edit(platforms, "- id: facebook", "- id: instagram")
    (problem,) = _problems(broken)
    assert problem.startswith(f"{platforms}: instagram: duplicate id")


def test_missing_english_text(broken: Path) -> None:
    orgs = broken / "organisations.yml"
    _edit(
        orgs,
        "    en: Het Juridisch Loket gives free legal advice to people on lower incomes.\n",
        "",
    )
    (problem,) = _problems(broken)
    assert problem.startswith(f"{orgs}: juridisch_loket: what: missing language 'en'")


def test_unknown_route_key(broken: Path) -> None:
    platforms = broken / "platforms.yml"
    _edit(platforms, "    doxing:\n", "    doxxing:\n")
    (problem,) = _problems(broken)
    assert problem.startswith(f"{platforms}: x: routes: unknown situation doxxing")


def test_verified_while_fields_are_unverified(broken: Path) -> None:
    orgs = broken / "organisations.yml"
    _edit(
        orgs,
        "  verified: false\n  unverified: [phone, hours]",
        "  verified: true\n  unverified: [phone, hours]",
    )
    (problem,) = _problems(broken)
    assert problem.startswith(f"{orgs}: juridisch_loket: verified is true while unverified")


def test_unquoted_time_is_explained(broken: Path) -> None:
    orgs = broken / "organisations.yml"
    _edit(orgs, 'close: "22:00"', "close: 22:00")
    (problem,) = _problems(broken)
    assert problem.startswith(f"{orgs}: politie: hours.weekly.0.close: put the value in quotes")


def test_every_problem_is_reported_in_one_run(broken: Path) -> None:
    orgs, platforms, laws = (broken / n for n in ("organisations.yml", "platforms.yml", "laws.yml"))
    _edit(orgs, "  source: ggdfryslan.nl 2022\n", "")
    _edit(orgs, "- id: offlimits", "- id: helpwanted")
    _edit(
        orgs,
        "    en: Het Juridisch Loket gives free legal advice to people on lower incomes.\n",
        "",
    )
    discord_route = "    image_abuse:\n      how:\n        nl: Vul het meldformulier van Discord"
    _edit(platforms, discord_route, discord_route.replace("image_abuse", "image_abus"))
    _edit(
        laws,
        "  complaint_offence: true\n",
        "  complaint_offence: true\n  complaint_offence: false\n",
    )
    problems = _problems(broken)
    expected = [
        (orgs, "csg: source"),
        (orgs, "helpwanted: duplicate id"),
        (orgs, "juridisch_loket: what: missing language 'en'"),
        (platforms, "discord: routes: unknown situation image_abus"),
        (laws, "'complaint_offence' appears twice"),
    ]
    for path, fragment in expected:
        assert any(p.startswith(f"{path}: ") and fragment in p for p in problems), fragment
    assert len(problems) == len(expected)


def test_missing_file_is_named(broken: Path) -> None:
    (broken / "laws.yml").unlink()
    assert _problems(broken) == [f"{broken / 'laws.yml'}: file not found"]
