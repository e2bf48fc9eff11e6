"""The registered datasets as the data service opens them: each dataset's store, opened once,
and its commit (every table's latest version), which keys caches and the audit log.

A read is labelled with the commit it read: the commit is taken before and after the read,
and a read that a new commit overtook is done again, so a label never names data it did not
see.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from quarry.exceptions import AccessDenied
from quarry.jobs import DatasetInfo, Identity, JobStore, refusal

if TYPE_CHECKING:  # the store's libraries load with the first read, not the server's start
    from quarry.data import Store

__all__ = ["DataCatalog", "NoSuchDataset", "StillChanging"]

T = TypeVar("T")
_LOG_ENTRY = re.compile(r"(\d{20})\.json")


class NoSuchDataset(LookupError):
    """No dataset of that name (the APIs' 404)."""


class StillChanging(RuntimeError):
    """Commits kept landing during a read: no answer can be labelled (the APIs' 503)."""


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
        from quarry.data import Store

        key = (info.name, info.location)
        with self._lock:
            if key not in self._stores:
                self._stores[key] = Store(info.location)
            return self._stores[key]

    def commit(self, info: DatasetInfo) -> str:
        """Every table's latest version and the store's generation, e.g. ``bars@12
        fundamentals@3 #1a2b3c4d``. The generation tells a store made again at the same
        place (its versions start again from 0) from the one it replaced: it digests where
        the dataset lives, when it was registered and when each table's first commit was
        written (on S3: each table's id)."""
        from quarry.data import TABLES

        store = self.store(info)
        parts, born = [], [info.location, info.created_at.isoformat()]
        for table in TABLES:
            version, first = _version(store, table)
            if version is not None:
                parts.append(f"{table}@{version}")
                born.append(f"{table}:{first}")
        generation = hashlib.sha256("\n".join(born).encode()).hexdigest()[:8]
        return " ".join([*parts, f"#{generation}"])

    def at_one_commit(self, info: DatasetInfo, read: Callable[[], T]) -> tuple[T, str]:
        """``read()`` and the commit it saw: read again if a commit landed meanwhile;
        ``StillChanging`` when commits kept landing (a label must name what was read)."""
        for _ in range(3):
            before = self.commit(info)
            out = read()
            if self.commit(info) == before:
                return out, before
        raise StillChanging(f"dataset {info.name!r} received a commit during each of three "
                            "reads; read again in a moment")  # fmt: skip


def _version(store: Store, table: str) -> tuple[int | None, str]:
    """A table's latest version and when its first commit was written: from its log's file
    names on a local disk (no log is parsed), else from Delta Lake."""
    location = store.location
    if location.is_local:
        log = os.path.join(location.child(table), "_delta_log")
        try:
            names = os.listdir(log)
        except FileNotFoundError:
            return None, ""
        versions = [int(m.group(1)) for n in names if (m := _LOG_ENTRY.fullmatch(n))]
        if not versions:
            return None, ""
        try:
            first = str(os.stat(os.path.join(log, f"{min(versions):020d}.json")).st_mtime_ns)
        except FileNotFoundError:
            first = ""
        return max(versions), first
    dt = store.table(table)
    if dt is None:
        return None, ""
    return int(dt.version()), str(dt.metadata().id)  # a table's id is made with it
