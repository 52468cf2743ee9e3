"""The contributor-facing files: every link in them leads somewhere, and GitHub can read
the issue forms (a broken form silently disappears from the "New issue" page)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GUIDES = ["README.md", "CONTRIBUTING.md", "SECURITY.md", ".github/pull_request_template.md"]
FORMS = sorted((ROOT / ".github" / "ISSUE_TEMPLATE").glob("*.yml"))
FORM_FILES = [path for path in FORMS if path.name != "config.yml"]
ELEMENT_TYPES = {"markdown", "input", "textarea", "dropdown", "checkboxes"}
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces become hyphens."""
    found: set[str] = set()
    for line in markdown.splitlines():
        heading = re.match(r"#{1,6} +(.+?) *#* *$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            found.add(slug)
    return found


def test_the_readme_links_the_licence_the_guide_and_the_security_policy() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = set(_LINK.findall(readme))
    assert {"LICENSE", "CONTRIBUTING.md", "SECURITY.md"} <= links
    assert "## Licence" in readme and "EUPL-1.2" in readme


@pytest.mark.parametrize("guide", GUIDES)
def test_every_link_in_the_guide_leads_somewhere(guide: str) -> None:
    text = (ROOT / guide).read_text(encoding="utf-8")
    broken: list[str] = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # a web address: not ours to check offline
        path_part, _, anchor = target.partition("#")
        file = (ROOT / guide).parent / path_part if path_part else ROOT / guide
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(file.read_text(encoding="utf-8")):
            broken.append(f"{target}: no such heading")
    assert broken == []


def _form(path: Path) -> dict[str, Any]:
    form = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(form, dict)
    return form


@pytest.mark.parametrize("path", FORM_FILES, ids=lambda path: path.name)
def test_each_issue_form_is_one_github_can_show(path: Path) -> None:
    form = _form(path)
    assert isinstance(form.get("name"), str) and isinstance(form.get("description"), str)
    body = form["body"]
    ids = [element["id"] for element in body if "id" in element]
    assert len(ids) == len(set(ids)), "ids must be unique"
    for element in body:
        assert element["type"] in ELEMENT_TYPES
        attributes = element["attributes"]
        if element["type"] == "markdown":
            assert attributes["value"].strip()
            continue
        assert re.fullmatch(r"[A-Za-z0-9_-]+", element["id"])
        assert attributes["label"].strip()
        if element["type"] == "dropdown":
            assert attributes["options"] and all(isinstance(o, str) for o in attributes["options"])
        if element["type"] == "checkboxes":
            assert all(option["label"].strip() for option in attributes["options"])


@pytest.mark.parametrize("path", FORM_FILES, ids=lambda path: path.name)
def test_each_issue_form_sends_security_reports_elsewhere(path: Path) -> None:
    intro = _form(path)["body"][0]
    assert intro["type"] == "markdown"
    assert "SECURITY.md" in intro["attributes"]["value"]
    assert "Report a" in intro["attributes"]["value"]


def test_a_data_correction_cannot_be_sent_without_its_source_and_date() -> None:
    body = _form(ROOT / ".github" / "ISSUE_TEMPLATE" / "data_correction.yml")["body"]
    required = {e["id"] for e in body if e.get("validations", {}).get("required")}
    assert {"source", "verified_on", "now", "should"} <= required


def test_there_is_no_blank_issue_that_skips_the_forms() -> None:
    config = _form(ROOT / ".github" / "ISSUE_TEMPLATE" / "config.yml")
    assert config["blank_issues_enabled"] is False
    assert (ROOT / "SECURITY.md").exists()  # GitHub's own security entry on the page needs it
