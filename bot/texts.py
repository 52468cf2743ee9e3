"""The response catalogue: every sentence the bot says, per language, as data."""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bot.errors import DataError
from bot.session import LANGUAGES

FALLBACK_LANGUAGE = "nl"
_FORMATTER = string.Formatter()


def _flatten(prefix: str, node: Any, out: dict[str, str], problems: list[str], where: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                problems.append(f"{where}: key {key!r} under {prefix or 'the top'} is not text")
                continue
            _flatten(f"{prefix}.{key}" if prefix else key, value, out, problems, where)
    elif isinstance(node, str):
        out[prefix] = node.strip("\n")
    else:
        problems.append(f"{where}: {prefix} must be text, not {type(node).__name__}")


def placeholders(text: str) -> set[str]:
    """The {names} a text expects; raises ValueError on broken braces."""
    return {name for _, name, _, _ in _FORMATTER.parse(text) if name}


class _Values(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class Texts:
    """Look up a key in a language, with an optional variant (`key.variant`, then `key.default`)."""

    def __init__(self, catalogues: Mapping[str, Mapping[str, str]]) -> None:
        self.catalogues = {lang: dict(entries) for lang, entries in catalogues.items()}

    @classmethod
    def load(cls, responses_dir: Path) -> Texts:
        texts, problems = cls.read(responses_dir)
        if problems:
            raise DataError(problems)
        return texts

    @classmethod
    def read(cls, responses_dir: Path) -> tuple[Texts, list[str]]:
        """The catalogue as far as it could be read, and every problem found."""
        catalogues: dict[str, dict[str, str]] = {}
        problems: list[str] = []
        for lang in LANGUAGES:
            path = responses_dir / f"{lang}.yml"
            where = _display(path)
            try:
                raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                problems.append(f"{where}: file missing")
                continue
            except yaml.YAMLError as error:
                problems.append(f"{where}: not valid YAML ({_yaml_position(error)})")
                continue
            except (UnicodeDecodeError, RecursionError) as error:
                problems += DataError.unreadable(where, error).problems
                continue
            if not isinstance(raw, dict):
                problems.append(f"{where}: must be a mapping of keys to texts")
                continue
            entries: dict[str, str] = {}
            try:
                _flatten("", raw, entries, problems, where)
            except RecursionError as error:  # an anchor that contains itself
                problems += DataError.unreadable(where, error).problems
                continue
            catalogues[lang] = entries
        texts = cls(catalogues)
        problems.extend(texts.problems(responses_dir))
        return texts, problems

    def problems(self, responses_dir: Path | None = None) -> list[str]:
        """Keys missing in a language and placeholders that differ between languages."""
        found: list[str] = []
        langs = [lang for lang in LANGUAGES if lang in self.catalogues]
        all_keys = set().union(*(self.catalogues[lang] for lang in langs)) if langs else set()
        for lang in langs:
            where = _display(responses_dir / f"{lang}.yml") if responses_dir else f"{lang}.yml"
            entries = self.catalogues[lang]
            for key in sorted(all_keys - entries.keys()):
                found.append(f"{where}: text key {key} is missing")
            for key, text in entries.items():
                try:
                    names = placeholders(text)
                except ValueError:
                    found.append(f"{where}: {key}: broken {{placeholder}} braces")
                    continue
                for other in langs:
                    other_text = self.catalogues[other].get(key)
                    if other == lang or other_text is None:
                        continue
                    try:
                        if placeholders(other_text) != names and lang < other:
                            found.append(
                                f"{where}: {key}: placeholders differ from {other}.yml"
                            )
                    except ValueError:
                        pass
        return found

    def has(self, key: str, lang: str = FALLBACK_LANGUAGE) -> bool:
        return key in self.catalogues.get(lang, {})

    def resolve(self, lang: str, key: str, variant: str | None = None) -> str | None:
        """The key actually used, trying the variant, then `.default`, then the plain key."""
        candidates = ([f"{key}.{variant}"] if variant else []) + [f"{key}.default", key]
        for language in (lang, FALLBACK_LANGUAGE):
            entries = self.catalogues.get(language, {})
            for candidate in candidates:
                if candidate in entries:
                    return entries[candidate]
        return None

    def get(self, lang: str, key: str, variant: str | None = None, **values: object) -> str:
        text = self.resolve(lang, key, variant)
        if text is None:
            return key
        if not values:
            return text.replace("{{", "{").replace("}}", "}") if "{" in text else text
        return _FORMATTER.vformat(text, (), _Values({k: str(v) for k, v in values.items()}))


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _yaml_position(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}"
    return "syntax error"
