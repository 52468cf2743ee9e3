"""Organisations, platforms and laws as validated data, with the open-now logic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from zoneinfo import ZoneInfo

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.errors import DataError

LANGUAGES = ("nl", "en")
SITUATIONS = (
    "image_abuse",
    "sextortion",
    "bullying",
    "stalking",
    "doxing",
    "threat",
    "impersonation",
)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
AMSTERDAM = ZoneInfo("Europe/Amsterdam")

ORGANISATIONS_FILE = "organisations.yml"
PLATFORMS_FILE = "platforms.yml"
LAWS_FILE = "laws.yml"

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_SLUG = r"^[a-z0-9_]+$"
_DOMAIN = r"^[a-z0-9-]+(\.[a-z0-9-]+)+$"
_ADDRESS = r"^[a-z0-9-]+(\.[a-z0-9-]+)+(/[^\s]*)?$"
_PHONE = r"^[0-9][0-9 -]*[0-9]$|^[0-9]$"
_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
# Fields that describe the record itself and so can't be "unverified".
_BOOKKEEPING = frozenset({"id", "source", "verified", "verified_on", "unverified"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Text(_Frozen):
    """A sentence in every language the bot speaks, so no user falls back to a blank."""

    nl: str = Field(min_length=1)
    en: str = Field(min_length=1)

    def get(self, lang: str) -> str:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}")
        return str(getattr(self, lang))


class Notes(_Frozen):
    """Practical notes; both languages must carry the same notes in the same order."""

    nl: tuple[str, ...] = ()
    en: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _same_notes(self) -> Self:
        if len(self.nl) != len(self.en):
            raise ValueError(f"nl has {len(self.nl)} notes but en has {len(self.en)}")
        if any(not note.strip() for note in (*self.nl, *self.en)):
            raise ValueError("a note is empty")
        return self

    def get(self, lang: str) -> tuple[str, ...]:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}")
        notes: tuple[str, ...] = getattr(self, lang)
        return notes


class Slot(_Frozen):
    """One weekly opening window; times are Amsterdam wall-clock, close is exclusive."""

    days: tuple[Day, ...] = Field(min_length=1)
    open: str = Field(pattern=_CLOCK)
    close: str = Field(pattern=_CLOCK)

    @model_validator(mode="after")
    def _open_before_close(self) -> Self:
        if len(set(self.days)) != len(self.days):
            raise ValueError("a day is listed twice")
        if self.open >= self.close:
            raise ValueError(f"open {self.open} is not before close {self.close}")
        return self

    def covers(self, moment: datetime) -> bool:
        """Whether this local (Amsterdam) moment falls in the slot."""
        if DAYS[moment.weekday()] not in self.days:
            return False
        return time.fromisoformat(self.open) <= moment.time() < time.fromisoformat(self.close)


class Hours(_Frozen):
    """Opening hours; `unknown` exists so the bot never guesses when a line is staffed."""

    kind: Literal["always", "weekly", "unknown"]
    weekly: tuple[Slot, ...] = ()
    note: Text | None = None

    @model_validator(mode="after")
    def _slots_match_kind(self) -> Self:
        if self.kind == "weekly" and not self.weekly:
            raise ValueError("kind is weekly but no weekly slots are given")
        if self.kind != "weekly" and self.weekly:
            raise ValueError(f"kind is {self.kind} but weekly slots are given")
        return self


class _Sourced(_Frozen):
    """Shared bookkeeping: where a fact comes from and which fields nobody has checked."""

    source: str = Field(min_length=1)
    verified_on: date | None = None
    verified: bool
    unverified: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _unverified_is_honest(self) -> Self:
        known = set(type(self).model_fields) - _BOOKKEEPING
        for name in self.unverified:
            if name not in known:
                raise ValueError(f"unverified lists {name!r}, which is not a field of this entry")
        if self.verified and self.unverified:
            raise ValueError(
                "verified is true while unverified lists " + ", ".join(self.unverified)
            )
        return self

    def shows(self, field: str) -> bool:
        """False for a field nobody has checked: the bot must not present it as fact."""
        if field not in type(self).model_fields:
            raise KeyError(field)
        return field not in self.unverified


M = TypeVar("M", bound=_Sourced)


class Organisation(_Sourced):
    """A help organisation or service the plan can point to."""

    id: str = Field(pattern=_SLUG)
    name: str = Field(min_length=1)
    what: Text
    notes: Notes = Notes()
    min_age: int | None = Field(default=None, ge=0)
    max_age: int | None = Field(default=None, ge=0)
    phone: str | None = Field(default=None, pattern=_PHONE)
    phone_alt: str | None = Field(default=None, pattern=_PHONE)
    phone_free: bool | None = None
    whatsapp: str | None = Field(default=None, pattern=_PHONE)
    web: str | None = Field(default=None, pattern=_DOMAIN)
    chat: str | None = Field(default=None, pattern=_DOMAIN)
    hours: Hours
    anonymous: bool | None = None
    removes_content: bool | None = None

    @model_validator(mode="after")
    def _ages_in_order(self) -> Self:
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")
        return self

    def is_open(self, at: datetime) -> bool | None:
        """None when nobody knows (unknown or unchecked hours), so the bot says nothing."""
        if self.hours.kind == "unknown" or not self.shows("hours"):
            return None
        if self.hours.kind == "always":
            return True
        moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        local = moment.astimezone(AMSTERDAM)
        return any(slot.covers(local) for slot in self.hours.weekly)


class Route(_Frozen):
    """How to report one kind of situation on a platform."""

    how: Text
    url: str | None = Field(default=None, pattern=_ADDRESS)


class Platform(_Sourced):
    """A platform and its reporting routes per situation."""

    id: str = Field(pattern=_SLUG)
    name: Text
    routes: dict[str, Route] = Field(min_length=1)
    dsa_contact: str | None = None
    notes: Notes = Notes()
    stopncii: bool | None = None
    take_it_down: bool | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _brand_name(cls, value: Any) -> Any:
        """A brand name is the same in every language; only 'another website' is translated."""
        if isinstance(value, str):
            return {lang: value for lang in LANGUAGES}
        return value

    @field_validator("routes", mode="before")
    @classmethod
    def _known_situations(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = [str(key) for key in value if key not in SITUATIONS]
            if unknown:
                raise ValueError(
                    f"unknown situation {', '.join(unknown)}; use one of {', '.join(SITUATIONS)}"
                )
        return value


class Law(_Sourced):
    """An article of the Dutch criminal code, cited the way the bot may cite it."""

    id: str = Field(pattern=r"^[0-9]+[a-z]?$")
    article: str = Field(min_length=1)
    formerly: str | None = None
    title: Text
    plain: Text
    max_penalty: Text | None = None
    complaint_offence: bool
    in_force: date | None = None
    note: Text | None = None


def as_link(address: str) -> str:
    """Data keeps addresses as facts.md writes them; a channel needs a clickable https link."""
    return address if address.startswith(("https://", "http://")) else f"https://{address}"


@dataclass(frozen=True)
class Directory:
    """Everything the plan can refer to, keyed by id."""

    organisations: dict[str, Organisation]
    platforms: dict[str, Platform]
    laws: dict[str, Law]

    def organisation(self, id: str) -> Organisation:
        return self.organisations[id]

    def platform(self, id: str) -> Platform:
        return self.platforms[id]

    def law(self, id: str) -> Law:
        return self.laws[id]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that notes duplicate keys, which YAML would otherwise silently overwrite."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int):
                continue  # unhashable keys: SafeLoader reports them as a YAML error
            if key in seen:
                line = key_node.start_mark.line + 1
                self.duplicates.append(f"line {line}: key {key!r} appears twice")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _shown(path: Path) -> str:
    """The path as an operator typed it: relative to the working directory when possible."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _describe(error: dict[str, Any]) -> str:
    """One pydantic error as 'field.path: what is wrong', in words a data editor follows."""
    loc = [str(part) for part in error["loc"]]
    kind = error["type"]
    if kind == "missing" and loc and loc[-1] in LANGUAGES:
        where = ".".join(loc[:-1]) or "text"
        return f"{where}: missing language {loc[-1]!r}"
    if not loc:
        return re.sub(r"^(Value|Assertion) error, ", "", str(error["msg"]))
    where = ".".join(loc)
    if kind == "missing":
        return f"{where}: field required"
    if kind == "string_type" and isinstance(error.get("input"), int | float):
        return f"{where}: put the value in quotes (YAML read it as a number)"
    if kind == "extra_forbidden":
        return f"{where}: unknown field (a typo?)"
    message = str(error["msg"])
    message = re.sub(r"^(Value|Assertion) error, ", "", message)
    if kind.startswith("string_pattern") and isinstance(error.get("input"), str):
        message = f"{error['input']!r} does not have the expected form"
    return f"{where}: {message[:1].lower()}{message[1:]}"


def _read_entries(path: Path, problems: list[str]) -> list[tuple[int, Any]]:
    """The file's entries with their line numbers; syntax errors go into `problems`."""
    shown = _shown(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{shown}: file not found")
        return []
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{shown}: can't read the file ({exc.__class__.__name__})")
        return []
    try:
        loader = _StrictLoader(text)  # the reader refuses some characters (NUL) right here
    except yaml.YAMLError as exc:
        problems.append(f"{shown}: YAML error: {' '.join(str(exc).split())}")
        return []
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problems.append(f"{shown}: {line}YAML error: {exc.problem or exc.context}")
        return []
    except yaml.YAMLError as exc:
        problems.append(f"{shown}: YAML error: {exc}")
        return []
    except RecursionError as exc:
        problems += DataError.unreadable(shown, exc).problems
        return []
    finally:
        loader.dispose()
    problems.extend(f"{shown}: {duplicate}" for duplicate in loader.duplicates)
    if data is None:
        problems.append(f"{shown}: the file is empty; it should be a list of entries")
        return []
    if not isinstance(data, list) or not isinstance(node, yaml.SequenceNode):
        problems.append(f"{shown}: the file should be a list of entries (lines starting with '- ')")
        return []
    return [(item.start_mark.line + 1, entry) for item, entry in zip(node.value, data, strict=True)]


def _load_file(path: Path, model: type[M], problems: list[str]) -> dict[str, M]:
    """Validate every entry of one file, collecting every problem instead of stopping."""
    shown = _shown(path)
    loaded: dict[str, M] = {}
    seen: dict[str, int] = {}
    for number, (line, entry) in enumerate(_read_entries(path, problems), start=1):
        if not isinstance(entry, dict):
            problems.append(f"{shown}: entry {number}: not a mapping of fields (line {line})")
            continue
        raw_id = entry.get("id")
        label = str(raw_id) if isinstance(raw_id, str) and raw_id else f"entry {number}"
        if isinstance(raw_id, str) and raw_id in seen:
            problems.append(
                f"{shown}: {label}: duplicate id, also used on line {seen[raw_id]} (line {line})"
            )
            continue
        if isinstance(raw_id, str):
            seen[raw_id] = line
        try:
            item = model.model_validate(entry)
        except ValidationError as exc:
            problems.extend(
                f"{shown}: {label}: {_describe(dict(error))} (line {line})"
                for error in exc.errors(include_url=False)
            )
            continue
        loaded[str(getattr(item, "id"))] = item  # noqa: B009 - every model here has an id
    return loaded


def _load(data_dir: Path) -> tuple[Directory, list[str]]:
    problems: list[str] = []
    directory = Directory(
        organisations=_load_file(data_dir / ORGANISATIONS_FILE, Organisation, problems),
        platforms=_load_file(data_dir / PLATFORMS_FILE, Platform, problems),
        laws=_load_file(data_dir / LAWS_FILE, Law, problems),
    )
    return directory, problems


def check_directory(data_dir: Path) -> list[str]:
    """Every problem in the three files, for `hulpwijzer check`; empty when all is well."""
    return _load(data_dir)[1]


def load_directory(data_dir: Path) -> Directory:
    """Load at start-up; a broken file stops the bot with every problem listed at once."""
    directory, problems = _load(data_dir)
    if problems:
        raise DataError(problems)
    return directory
