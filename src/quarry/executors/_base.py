"""The executor interface and the local executor (the Ray one is ``_ray``)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["Executor", "LocalExecutor", "Shared"]

T = TypeVar("T")
R = TypeVar("R")

# Called as each piece finishes: (how many are done, how many in all).
Done = Callable[[int, int], None]


@dataclass(frozen=True)
class Shared(Generic[T]):
    """A large read-only value handed to every task: the value itself for the local
    executor, a reference into Ray's object store for the Ray one."""

    ref: Any
    kind: str = "object"  # "polars": stored as an Arrow table, read back as a DataFrame


class Executor(abc.ABC):
    """Runs independent pieces of a step; ``workers``: how many run at once."""

    name: ClassVar[str]

    @property
    @abc.abstractmethod
    def workers(self) -> int:
        """How many pieces can run at the same time."""

    @abc.abstractmethod
    def share(self, value: T) -> Shared[T]:
        """Make ``value`` available to every task, once."""

    @abc.abstractmethod
    def map(
        self,
        fn: Callable[..., R],
        items: Sequence[Any],
        *,
        shared: Mapping[str, Shared[Any]] | None = None,
        cpus: float = 1.0,
        done: Done | None = None,
    ) -> list[R]:
        """``[fn(item, **shared values) for item in items]``, in the items' order. ``fn``
        must be a module-level function (a Ray task pickles it by reference); ``cpus``: what
        each piece uses, for Ray's placement. An exception in a piece is raised here as it
        was raised there (a ``QuarryError`` stays one)."""

    def close(self) -> None:
        """Release what the executor holds (the Ray connection); it may not be used again."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """One piece after another, in this process."""

    name = "local"

    @property
    def workers(self) -> int:
        return 1

    def share(self, value: T) -> Shared[T]:
        return Shared(value)

    def map(
        self,
        fn: Callable[..., R],
        items: Sequence[Any],
        *,
        shared: Mapping[str, Shared[Any]] | None = None,
        cpus: float = 1.0,
        done: Done | None = None,
    ) -> list[R]:
        values = {name: s.ref for name, s in (shared or {}).items()}
        out: list[R] = []
        for item in items:
            out.append(fn(item, **values))
            if done is not None:
                done(len(out), len(items))
        return out
