"""The registered datasets as the data service opens them: each dataset's store, opened once,
and its commit (every table's latest version), which keys caches and the audit log.

A read is labelled with the commit it read: the commit is taken before and after the read,
and a read that a new commit overtook is done again, so a label never names data it did not
see.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from typing import TypeVar

from quarry.data import TABLES, Store
from quarry.exceptions import AccessDenied
from quarry.jobs import DatasetInfo, Identity, JobStore, refusal

__all__ = ["DataCatalog", "NoSuchDataset"]

T = TypeVar("T")
_LOG_ENTRY = re.compile(r"(\d{20})\.json")


class NoSuchDataset(LookupError):
    """No dataset of that name, or one the caller may not know of (the APIs' 404)."""


class DataCatalog:
    """The job database's datasets and their stores."""

    def __init__(self, jobs: JobStore) -> None:
        self.jobs = jobs
        self._stores: dict[tuple[str, str], Store] = {}
        self._lock = threading.Lock()

    def info(self, name: str) -> DatasetInfo:
        found = self.jobs.dataset(name)
        if found is None:
            raise NoSuchDataset(f"no dataset {name!r}; GET /v1/datasets lists those you may read")
        return found

    def readable(self, who: Identity) -> list[DatasetInfo]:
        """The datasets ``who`` may read."""
        return [d for d in self.jobs.datasets() if refusal(who, d) is None]

    def check(self, who: Identity, name: str) -> DatasetInfo:
        """``name``'s record when ``who`` may read it; ``AccessDenied`` saying why not."""
        found = self.info(name)
        why = refusal(who, found)
        if why is not None:
            raise AccessDenied(why)
        return found

    def store(self, info: DatasetInfo) -> Store:
        key = (info.name, info.location)
        with self._lock:
            if key not in self._stores:
                self._stores[key] = Store(info.location)
            return self._stores[key]

    def commit(self, info: DatasetInfo) -> str:
        """Every table's latest version, e.g. ``bars@12 fundamentals@3`` (empty: no data)."""
        store = self.store(info)
        parts = []
        for table in TABLES:
            version = _version(store, table)
            if version is not None:
                parts.append(f"{table}@{version}")
        return " ".join(parts)

    def at_one_commit(self, info: DatasetInfo, read: Callable[[], T]) -> tuple[T, str]:
        """``read()`` and the commit it saw: read again if a commit landed meanwhile."""
        for _ in range(3):
            before = self.commit(info)
            out = read()
            if self.commit(info) == before:
                return out, before
        return out, self.commit(info)  # a store committed to without pause: the latest


def _version(store: Store, table: str) -> int | None:
    """A table's latest version: from its log's file names on a local disk (no log is
    parsed), else from Delta Lake."""
    location = store.location
    if location.is_local:
        try:
            names = os.listdir(os.path.join(location.child(table), "_delta_log"))
        except FileNotFoundError:
            return None
        versions = [int(m.group(1)) for n in names if (m := _LOG_ENTRY.fullmatch(n))]
        return max(versions) if versions else None
    dt = store.table(table)
    return None if dt is None else int(dt.version())
