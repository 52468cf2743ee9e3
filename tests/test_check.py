"""`hulpwijzer check`: passes on the shipped data; on a broken copy it names every problem."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import yaml

from bot.checks import check_all

ROOT = Path(__file__).resolve().parent.parent


def _copy_project(tmp_path: Path) -> Path:
    for folder in ("data", "responses"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def test_the_shipped_data_has_no_problems() -> None:
    assert check_all(ROOT) == []


def test_the_command_exits_0_on_the_shipped_data() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "check"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_copy_reports_every_problem_in_one_run(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    flow_path = root / "data" / "flow.yml"
    flow = yaml.safe_load(flow_path.read_text(encoding="utf-8"))
    flow["steps"]["who"]["options"][0]["next"] = "nowhere"  # dangling target
    flow["steps"]["orphan"] = {  # unreachable, and its text exists in no language
        "text": "ask.orphan",
        "options": [{"id": "ok", "label": "opt.go_on", "next": "who"}],
    }
    flow_path.write_text(yaml.safe_dump(flow, allow_unicode=True), encoding="utf-8")

    en_path = root / "responses" / "en.yml"
    en = yaml.safe_load(en_path.read_text(encoding="utf-8"))
    del en["ask"]["safety"]
    en_path.write_text(yaml.safe_dump(en, allow_unicode=True), encoding="utf-8")

    orgs_path = root / "data" / "organisations.yml"
    orgs = yaml.safe_load(orgs_path.read_text(encoding="utf-8"))
    del orgs[0]["source"]
    orgs_path.write_text(yaml.safe_dump(orgs, allow_unicode=True), encoding="utf-8")

    problems = "\n".join(check_all(root))
    assert "flow.yml" in problems and "unknown target 'nowhere'" in problems
    assert "orphan" in problems and "can't be reached" in problems
    assert "ask.orphan" in problems
    assert "en.yml" in problems and "ask.safety" in problems
    assert "organisations.yml" in problems and "source" in problems


def test_the_command_exits_1_and_names_the_file(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    (root / "data" / "flow.yml").write_text("steps: [this is: not: valid", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "bot", "check", "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "flow.yml" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_dead_end_is_reported(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    flow_path = root / "data" / "flow.yml"
    flow = yaml.safe_load(flow_path.read_text(encoding="utf-8"))
    flow["steps"]["goodbye"]["options"] = []
    flow_path.write_text(yaml.safe_dump(flow, allow_unicode=True), encoding="utf-8")
    assert any("goodbye is a dead end" in p for p in check_all(root))


def test_a_fact_without_a_verified_date_is_reported(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    laws_path = root / "data" / "laws.yml"
    laws = yaml.safe_load(laws_path.read_text(encoding="utf-8"))
    del laws[0]["verified_on"]
    laws_path.write_text(yaml.safe_dump(laws, allow_unicode=True), encoding="utf-8")

    problems = check_all(root)
    assert any(
        "laws.yml" in p and laws[0]["id"] in p and "verified_on is missing" in p for p in problems
    ), problems


def test_a_verified_date_in_the_future_is_reported(tmp_path: Path) -> None:
    root = _copy_project(tmp_path)
    orgs_path = root / "data" / "organisations.yml"
    orgs = yaml.safe_load(orgs_path.read_text(encoding="utf-8"))
    orgs[1]["verified_on"] = date(2026, 12, 4)
    orgs_path.write_text(yaml.safe_dump(orgs, allow_unicode=True), encoding="utf-8")

    problems = check_all(root, today=date(2026, 12, 3))
    assert len(problems) == 1, problems
    assert "organisations.yml" in problems[0] and orgs[1]["id"] in problems[0]
    assert "2026-12-04" in problems[0] and "future" in problems[0]
    assert check_all(root, today=date(2026, 12, 4)) == []  # checked today is fine
