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
    │   ├── ExpressionError     a feature expression that does not parse or names no operator
    │   ├── YamlError           a file a user wrote that Quarry cannot read as YAML (its line)
    │   ├── WorkflowError       a workflow file with problems (one line each, with its place)
    │   ├── ManifestError       a job manifest that cannot be queued (``problems``: path, message)
    │   ├── AccessDenied        a dataset the caller may not read or write (the APIs' 403)
    │   └── NotFittedError      an estimator or processor used before ``fit``
    ├── LookaheadError          a feature that reads data from after its date
    └── JobServiceError         the job service answered an error, or could not be reached
        ├── ServerUnreachable   no answer at the URL
        ├── AuthenticationError 401: no, an unknown or a revoked token
        ├── PermissionDenied    403: not a member of the project
        ├── JobNotFound         404: no such job in the caller's projects
        ├── JobConflict         409: e.g. cancelling a job that has ended
        └── InvalidRequest      422: ``problems`` as the server wrote them ({path, message})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

__all__ = [
    "AccessDenied",
    "AuthenticationError",
    "BadInputError",
    "ConflictError",
    "DataError",
    "ExpressionError",
    "InvalidRequest",
    "JobConflict",
    "JobNotFound",
    "JobServiceError",
    "LookaheadError",
    "ManifestError",
    "NotFittedError",
    "PermissionDenied",
    "Problem",
    "QuarryError",
    "ServerUnreachable",
    "StoreNotFoundError",
    "UsageError",
    "WorkflowError",
    "YamlError",
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


class YamlError(UsageError):
    """A YAML file that cannot be read: ``source``, ``line`` and ``column`` (1-based, None when
    unknown) and ``problem``, the message without its place."""

    def __init__(
        self, source: str, problem: str, line: int | None = None, column: int | None = None
    ) -> None:
        self.source, self.problem, self.line, self.column = source, problem, line, column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{source}: {where}{problem}")


class WorkflowError(UsageError):
    """A workflow file with problems: ``problems`` holds one line per problem, each with its
    place (``backtest.topk``) and line; the command line prints each after the file's name."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        return [f"{self.path}: {p}" for p in self.problems]


class NotFittedError(UsageError):
    """An estimator or a processor used before ``fit``."""


class Problem(TypedDict):
    """One thing wrong with a manifest: where (``resources.cpus``, ``data[0].mode``, or ``""``
    for the whole document) and a message that names the place itself."""

    path: str
    message: str


class ManifestError(UsageError):
    """A manifest that cannot be queued.

    ``problems`` lists every problem found, as ``{path, message}`` (the API's 422 body);
    ``str()`` is them all on one line after the source (the file, or ``"manifest"``), which is
    what the CLI prints.
    """

    def __init__(self, problems: Sequence[Problem], source: str | None = "manifest") -> None:
        self.problems = list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(p["message"] for p in self.problems))

    def lines(self) -> list[str]:
        prefix = f"{self.source}: " if self.source else ""
        return [prefix + p["message"] for p in self.problems]


class AccessDenied(UsageError):
    """A dataset the caller may not read or write: the reason names it (the APIs' 403)."""


class JobServiceError(QuarryError):
    """The job service answered with an error (``status``), or could not be reached."""

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 detail: Any = None) -> None:  # fmt: skip
        super().__init__(message)
        self.url, self.status, self.detail = url, status, detail


class ServerUnreachable(JobServiceError):
    """Nothing answered at the server's URL."""


class AuthenticationError(JobServiceError):
    """401: the token is missing, unknown or revoked."""


class PermissionDenied(JobServiceError):
    """403: the token's user is not a member of the project."""


class JobNotFound(JobServiceError):
    """404: no such job in the caller's projects."""


class JobConflict(JobServiceError):
    """409: the request does not fit the job's state (cancelling an ended job)."""


class InvalidRequest(JobServiceError):
    """422: the manifest or a parameter is wrong; ``problems`` as ``{path, message}``."""

    def __init__(self, message: str, *, url: str, status: int | None = None,
                 detail: Any = None) -> None:  # fmt: skip
        super().__init__(message, url=url, status=status, detail=detail)
        self.problems: list[dict[str, str]] = detail if isinstance(detail, list) else []

    def lines(self) -> list[str]:
        if not self.problems:
            return [str(self)]
        return [str(p.get("message") or p.get("path") or p) for p in self.problems]
