"""The triage graph as data: steps, options, branches and the advice that makes a plan."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.errors import DataError

# Targets that are not steps: go back to where the user was before an interruption.
RESUME = "@resume"
# Target of "yes, that's right" after the classifier suggested a situation.
SUGGESTION = "@suggestion"
# Target of "yes, stop and delete everything".
ERASE = "@erase"
SPECIAL_TARGETS = {RESUME, SUGGESTION, ERASE}

Condition = dict[str, list[str]]


def matches(condition: Condition, answers: dict[str, str]) -> bool:
    """All slots must hold one of the listed values; `-` stands for 'not answered'."""
    for slot, allowed in condition.items():
        value = answers.get(slot, "-")
        if value not in allowed:
            return False
    return True


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Branch(_Model):
    when: Condition = Field(default_factory=dict)
    goto: str


Target = str | list[Branch]


def targets_of(target: Target | None) -> list[str]:
    if target is None:
        return []
    return [target] if isinstance(target, str) else [b.goto for b in target]


def resolve(target: Target, answers: dict[str, str]) -> str | None:
    """The first branch whose condition holds (a branch without `when` always holds)."""
    if isinstance(target, str):
        return target
    return next((b.goto for b in target if matches(b.when, answers)), None)


class Option(_Model):
    id: str = Field(pattern=r"^[a-z0-9_]{1,24}$")
    label: str
    set: dict[str, str] = Field(default_factory=dict)
    next: Target | None = None
    show_if: Condition = Field(default_factory=dict)


StepKind = Literal[
    "question", "plan", "plan_more", "input", "letter_ready", "aangifte", "evidence"
]


class Step(_Model):
    id: str = Field(pattern=r"^[a-z0-9_]{1,32}$")
    kind: StepKind = "question"
    text: str
    note: str | None = None
    variant_by: str | None = None
    options: list[Option] = Field(default_factory=list)
    next: Target | None = None
    ask_if: Condition = Field(default_factory=dict)
    orgs: list[str] = Field(default_factory=list)
    free_text: Literal["situation", "urls", "name", "email"] | None = None

    @field_validator("options")
    @classmethod
    def _unique_options(cls, options: list[Option]) -> list[Option]:
        ids = [o.id for o in options]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate option ids: {', '.join(duplicates)}")
        return options

    def target_of(self, option: Option) -> Target | None:
        return option.next if option.next is not None else self.next

    def option(self, option_id: str) -> Option | None:
        return next((o for o in self.options if o.id == option_id), None)

    def visible_options(self, answers: dict[str, str]) -> list[Option]:
        return [o for o in self.options if matches(o.show_if, answers)]


AdviceTier = Literal["first", "step", "more"]


class Advice(_Model):
    """One piece of a plan: a tip to do first, a next step (with an organisation), or more."""

    id: str
    tier: AdviceTier
    priority: int = 50
    text: str
    org: str | None = None
    route: bool = False
    when: Condition = Field(default_factory=dict)
    unless: Condition = Field(default_factory=dict)

    def applies(self, answers: dict[str, str]) -> bool:
        if not matches(self.when, answers):
            return False
        return not (self.unless and matches(self.unless, answers))


class Flow(_Model):
    start: str
    steps: dict[str, Step]
    advice: list[Advice]
    commands: dict[str, list[str]]
    entry_points: list[str] = Field(default_factory=list)

    def step(self, step_id: str) -> Step:
        return self.steps[step_id]

    def plan(self, answers: dict[str, str]) -> list[Advice]:
        """The advice that applies, in the order a person should act on it."""
        order = {"first": 0, "step": 1, "more": 2}
        chosen = [a for a in self.advice if a.applies(answers)]
        return sorted(chosen, key=lambda a: (order[a.tier], a.priority))


def read_yaml(path: Path) -> object:
    """A data file's YAML, or a DataError naming the file (missing, unreadable, broken)."""
    where = str(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError([f"{where}: file missing"]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        position = f"line {mark.line + 1}" if mark is not None else "syntax error"
        raise DataError([f"{where}: not valid YAML ({position})"]) from None
    except (UnicodeDecodeError, RecursionError) as error:
        raise DataError.unreadable(where, error) from None
    except OSError as error:
        raise DataError([f"{where}: can't read the file ({error.strerror})"]) from None


def load_flow(path: Path, check_graph: bool = True) -> Flow:
    """Parse and validate the graph; all structural problems are raised at once."""
    where = str(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise DataError([f"{where}: must be a mapping with start, steps, advice and commands"])
    steps_raw = raw.get("steps")
    if isinstance(steps_raw, dict):
        raw = dict(raw)
        raw["steps"] = {
            key: ({"id": key, **value} if isinstance(value, dict) else value)
            for key, value in steps_raw.items()
        }
    try:
        flow = Flow.model_validate(raw)
    except ValidationError as error:
        raise DataError(
            [f"{where}: {_location(e['loc'])}: {e['msg']}" for e in error.errors()]
        ) from None
    problems = graph_problems(flow, where) if check_graph else []
    if problems:
        raise DataError(problems)
    return flow


def _location(loc: Iterable[object]) -> str:
    return ".".join(str(part) for part in loc) or "(top)"


def graph_problems(flow: Flow, where: str) -> list[str]:
    """Unknown targets, unreachable steps and dead ends."""
    problems: list[str] = []
    known = set(flow.steps) | SPECIAL_TARGETS
    if flow.start not in flow.steps:
        problems.append(f"{where}: start step {flow.start!r} does not exist")
    for step in flow.steps.values():
        for option in step.options:
            target = step.target_of(option)
            if target is None:
                problems.append(f"{where}: step {step.id}, option {option.id}: no next step")
            for name in targets_of(target):
                if name not in known:
                    problems.append(
                        f"{where}: step {step.id}, option {option.id}: unknown target {name!r}"
                    )
            if isinstance(target, list) and target and target[-1].when:
                problems.append(
                    f"{where}: step {step.id}, option {option.id}: last branch needs no `when`"
                )
        for name in targets_of(step.next):
            if name not in known:
                problems.append(f"{where}: step {step.id}: unknown next {name!r}")
        if not step.options and step.free_text is None:
            problems.append(f"{where}: step {step.id} is a dead end (no options)")
        if step.ask_if and step.next is None:
            problems.append(f"{where}: step {step.id} has ask_if but no next to skip to")
    reachable = _reachable(flow)
    roots = set(flow.entry_points)
    for step_id in flow.steps:
        if step_id not in reachable and step_id not in roots:
            problems.append(f"{where}: step {step_id} can't be reached from {flow.start}")
    for root in roots:
        if root not in flow.steps:
            problems.append(f"{where}: entry_points names unknown step {root!r}")
    return problems


def _reachable(flow: Flow) -> set[str]:
    seen: set[str] = set()
    todo = [flow.start, *flow.entry_points]
    while todo:
        current = todo.pop()
        if current in seen or current not in flow.steps:
            continue
        seen.add(current)
        step = flow.steps[current]
        for option in step.options:
            todo.extend(targets_of(step.target_of(option)))
        todo.extend(targets_of(step.next))
    return seen
