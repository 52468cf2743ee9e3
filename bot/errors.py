"""Errors an operator can cause: they stop start-up with one sentence naming file and fix."""

from __future__ import annotations


class ConfigError(Exception):
    """Missing or malformed configuration (environment, .env)."""


class DataError(Exception):
    """A data file is broken. `problems` lists every problem found, each naming the file."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems) if problems else "data error")

    @classmethod
    def unreadable(cls, where: str, error: UnicodeDecodeError | RecursionError) -> DataError:
        """A file YAML can't turn into data: not UTF-8, or nested (or self-referring) so
        deeply that reading it would exhaust Python's stack (found by tests/test_fuzz.py)."""
        if isinstance(error, UnicodeDecodeError):
            return cls([f"{where}: is not UTF-8 text (byte {error.start}); save it as UTF-8"])
        return cls(
            [f"{where}: is nested too deeply or refers to itself (YAML anchors); simplify it"]
        )
