"""Quarry's one exception tree.

Every error a user can cause or meet is a ``QuarryError``; the CLI prints its message on one
line and exits non-zero, so a message must say what was wrong, with the offending value, and
what to do about it::

    QuarryError
    ├── DataError               bad or missing data, an unusable store location
    │   ├── BadInputError       a vendor file failed validation (carries one line per problem)
    │   ├── StoreNotFoundError  no Quarry store at the given location
    │   └── ConflictError       another writer committed first; nothing of ours was written
    ├── UsageError              a bad argument (an unparseable date, an unknown field ...)
    │   └── ExpressionError     a feature expression that does not parse or names no operator
    └── LookaheadError          a feature that reads data from after its date
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BadInputError",
    "ConflictError",
    "DataError",
    "ExpressionError",
    "LookaheadError",
    "QuarryError",
    "StoreNotFoundError",
    "UsageError",
]


class QuarryError(Exception):
    """Base of every error Quarry raises on purpose."""

    def lines(self) -> list[str]:
        """The message as the lines a command-line user should see."""
        return [str(self)]


class DataError(QuarryError):
    """Bad or missing data, or a store that cannot be used."""


class UsageError(QuarryError):
    """A bad argument to a command or function."""


class StoreNotFoundError(DataError):
    """The location holds no Quarry store (or not the requested table)."""


class ConflictError(DataError):
    """Another writer committed to the same table after we read it; our commit was abandoned."""


class BadInputError(DataError):
    """A vendor file failed validation.

    ``problems`` holds one line per kind of problem, each naming the file, the line, the column,
    the offending value and how many rows it affects.
    """

    def __init__(self, path: str, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = list(problems)
        n = len(self.problems)
        self.summary = (
            f"{path}: {n} kind{'s' if n != 1 else ''} of problem; nothing was written "
            "(fix the file, or pass --skip-bad to commit the good rows)"
        )
        super().__init__("\n".join([*self.problems, self.summary]))

    def lines(self) -> list[str]:
        return [*self.problems, self.summary]


class ExpressionError(UsageError):
    """A feature expression that does not parse, or uses an unknown operator or field."""


class LookaheadError(QuarryError):
    """A feature reads data from after its own date (allowed only in a label)."""
