"""`hulpwijzer check`: every data file against its schema, and the files against each other."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from bot.config import PROJECT_ROOT
from bot.directory import (
    LAWS_FILE,
    ORGANISATIONS_FILE,
    PLATFORMS_FILE,
    Directory,
    check_directory,
    load_directory,
)
from bot.errors import DataError
from bot.flow import Flow, graph_problems, load_flow
from bot.session import LANGUAGES
from bot.texts import Texts

# Platform options in the flow that are not entries of platforms.yml.
_NOT_PLATFORMS = {"unknown", "cancel"}


def check_all(root: Path | None = None, today: date | None = None) -> list[str]:
    """All problems of all files in one run; an empty list means the data is good."""
    base = root or PROJECT_ROOT
    data, responses = base / "data", base / "responses"
    problems: list[str] = []
    flow: Flow | None = None
    try:
        flow = load_flow(data / "flow.yml", check_graph=False)
        problems += graph_problems(flow, str(data / "flow.yml"))
    except DataError as error:
        problems += error.problems
    texts, text_problems = Texts.read(responses)
    problems += text_problems
    directory_problems = check_directory(data)
    problems += directory_problems
    try:
        from bot.safety import CrisisRules

        CrisisRules.load(data / "crisis_rules.yml")
    except DataError as error:
        problems += error.problems
    from bot.letters import check_templates

    problems += check_templates(responses / "letters")
    if flow is not None and texts is not None:
        problems += _text_keys(flow, texts, data / "flow.yml")
    directory = None if directory_problems else load_directory(data)
    if directory is not None:
        problems += _verified_dates(directory, data, today or date.today())
    if flow is not None and directory is not None:
        problems += _references(flow, directory, data / "flow.yml")
    if texts is not None and directory is not None:
        from bot.lesson import LESSONS_FILE, check_lessons

        problems += check_lessons(data / LESSONS_FILE, texts, directory)
    return problems


def _text_keys(flow: Flow, texts: Texts, where: Path) -> list[str]:
    """Every key the flow names must resolve in every language."""
    found: list[str] = []
    wanted: list[tuple[str, str]] = []
    for step in flow.steps.values():
        wanted.append((f"step {step.id}: text", step.text))
        if step.note:
            wanted.append((f"step {step.id}: note", step.note))
        for option in step.options:
            wanted.append((f"step {step.id}, option {option.id}: label", option.label))
    for advice in flow.advice:
        wanted.append((f"advice {advice.id}: text", advice.text))
    for lang in LANGUAGES:
        for place, key in wanted:
            if texts.resolve(lang, key) is None and texts.resolve(lang, key, "default") is None:
                found.append(f"{where}: {place}: text key {key} is missing in responses/{lang}.yml")
    return found


def _references(flow: Flow, directory: object, where: Path) -> list[str]:
    from bot.directory import Directory

    assert isinstance(directory, Directory)
    found: list[str] = []
    orgs = set(directory.organisations)
    for step in flow.steps.values():
        for org in step.orgs:
            if org not in orgs:
                found.append(f"{where}: step {step.id}: unknown organisation {org!r}")
        for option in step.options:
            for slot in ("platform", "letter_platform"):
                value = option.set.get(slot)
                if value and value not in directory.platforms and value not in _NOT_PLATFORMS:
                    found.append(
                        f"{where}: step {step.id}, option {option.id}: unknown platform {value!r}"
                    )
    for advice in flow.advice:
        if advice.org and advice.org not in orgs:
            found.append(f"{where}: advice {advice.id}: unknown organisation {advice.org!r}")
    return found


def _verified_dates(directory: Directory, data: Path, today: date) -> list[str]:
    """Every fact needs the day someone checked it at its source (CONTRIBUTING.md promises it)."""
    found: list[str] = []
    files = (
        (ORGANISATIONS_FILE, directory.organisations),
        (PLATFORMS_FILE, directory.platforms),
        (LAWS_FILE, directory.laws),
    )
    for name, entries in files:
        for entry_id, entry in entries.items():
            where = f"{data / name}: {entry_id}"
            if entry.verified_on is None:
                found.append(
                    f"{where}: verified_on is missing: write the day you checked the source"
                    " (YYYY-MM-DD)"
                )
            elif entry.verified_on > today:
                found.append(
                    f"{where}: verified_on {entry.verified_on} is in the future: write the day"
                    " you checked the source"
                )
    return found
