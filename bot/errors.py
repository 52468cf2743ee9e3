"""Errors an operator can cause: they stop start-up with one sentence naming file and fix."""

from __future__ import annotations


class ConfigError(Exception):
    """Missing or malformed configuration (environment, .env)."""


class DataError(Exception):
    """A data file is broken. `problems` lists every problem found, each naming the file."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems) if problems else "data error")
