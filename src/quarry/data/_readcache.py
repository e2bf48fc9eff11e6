"""The read-through cache of a machine that reads through the data service: answers on local
disk, keyed by dataset, query and the commit the service said they read, bounded in size,
least recently used first out.

An entry is valid only for its commit: the client asks the service with ``If-None-Match``
naming the commit's tag (the ``ETag`` it was answered with), and uses the entry only on
304, so a vendor correction (a new commit) is never answered from the cache. Many processes
share one cache: the index is a SQLite file (WAL, a busy timeout), entries are written to a
temporary file and renamed into place, and the counters (hits, misses, bytes) live in the
index too, for /metrics.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the index's users import Arrow; the cache's stats do not need it
    import pyarrow as pa

__all__ = ["CacheStats", "ReadCache", "default_cache_bytes"]

_SCHEMA = """
create table if not exists entries (
    key text primary key, dataset text not null, commit_id text not null,
    rows integer not null, size integer not null, used real not null);
create table if not exists counters (name text primary key, value integer not null);
"""


def default_cache_bytes() -> int:
    """``$QUARRY_DATA_CACHE_BYTES`` (bytes), else 10 GiB."""
    text = os.environ.get("QUARRY_DATA_CACHE_BYTES", "").strip()
    if not text:
        return 10 << 30
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        from quarry.exceptions import UsageError

        raise UsageError(f"QUARRY_DATA_CACHE_BYTES={text!r}: give the read cache's size in "
                         "bytes, e.g. 10737418240 for 10 GiB")  # fmt: skip
    return value


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    hit_bytes: int
    miss_bytes: int
    entries: int
    size: int


@dataclass(frozen=True)
class Entry:
    """A kept answer: its file, its commit's tag, its rows."""

    path: Path
    commit: str
    rows: int

    def read(self) -> pa.Table:
        """The answer, mapped from its file (FileNotFoundError: evicted meanwhile)."""
        import pyarrow as pa

        return pa.ipc.open_file(pa.memory_map(str(self.path))).read_all()


class ReadCache:
    """Entries under ``root`` (default ``$QUARRY_HOME/cache/data``), ``max_bytes`` in all."""

    def __init__(self, root: Path | None = None, max_bytes: int | None = None) -> None:
        from quarry.settings import quarry_home

        self.root = root if root is not None else quarry_home() / "cache" / "data"
        self.max_bytes = max_bytes if max_bytes is not None else default_cache_bytes()
        self.root.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.root / "index.db", timeout=60, isolation_level=None)
        try:
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=normal")
            yield db
        finally:
            db.close()

    @staticmethod
    def key(server: str, dataset: str, query: str) -> str:
        return hashlib.sha256(f"{server}\n{dataset}\n{query}".encode()).hexdigest()

    def _path(self, key: str, commit: str) -> Path:
        """An answer's file, named by its key and its commit: two writers of different
        commits never write one file, so a row and its file always agree."""
        tag = hashlib.sha256(commit.encode()).hexdigest()[:16]
        return self.root / key[:2] / f"{key}-{tag}.arrow"

    def lookup(self, key: str) -> Entry | None:
        """The entry of ``key`` and the commit it holds, if any (not yet counted a hit)."""
        with self._db() as db:
            row = db.execute("select commit_id, rows from entries where key = ?", (key,)).fetchone()
        if row is None or not self._path(key, row[0]).exists():
            return None
        return Entry(self._path(key, row[0]), row[0], int(row[1]))

    def hit(self, key: str, size: int) -> None:
        """The service confirmed the entry's commit: count it, and mark it used now."""
        with self._db() as db:
            db.execute("update entries set used = ? where key = ?", (time.time(), key))
            self._count(db, hits=1, hit_bytes=size)

    def miss(self, key: str, dataset: str, tag: str, table: pa.Table) -> None:
        """Keep a fresh answer (``tag``: its commit's, as the service names it), then evict
        the least recently used past the bound. It is kept as an uncompressed Arrow file, so
        that a hit maps it and reads no byte it does not use (a warm read costs no decoding:
        disk is traded for the CPU of every read after the first)."""
        import pyarrow as pa

        commit, rows = tag, table.num_rows
        path = self._path(key, commit)
        path.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: threads and processes sharing the cache fetch the same answer
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key[:16]}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            with pa.ipc.new_file(out, table.schema) as writer:
                writer.write_table(table)
        size = os.path.getsize(tmp)
        os.replace(tmp, path)
        with self._db() as db:
            db.execute("begin immediate")
            before = db.execute("select commit_id from entries where key = ?", (key,)).fetchone()
            db.execute(
                "insert or replace into entries values (?, ?, ?, ?, ?, ?)",
                (key, dataset, commit, rows, size, time.time()),
            )
            self._count(db, misses=1, miss_bytes=size)
            self._evict(db, keep=key)
            db.execute("commit")
        if before is not None and before[0] != commit:  # the answer of an older commit
            with contextlib.suppress(FileNotFoundError):
                self._path(key, before[0]).unlink()

    def _evict(self, db: sqlite3.Connection, keep: str) -> None:
        total = int(db.execute("select coalesce(sum(size), 0) from entries").fetchone()[0])
        if total <= self.max_bytes:
            return
        for key, commit, size in db.execute(
            "select key, commit_id, size from entries where key != ? order by used", (keep,)
        ).fetchall():
            db.execute("delete from entries where key = ?", (key,))
            with contextlib.suppress(FileNotFoundError):
                self._path(key, commit).unlink()
            total -= int(size)
            if total <= self.max_bytes:
                break

    @staticmethod
    def _count(db: sqlite3.Connection, **add: int) -> None:
        for name, value in add.items():
            db.execute(
                "insert into counters values (?, ?) on conflict(name) do update set "
                "value = value + excluded.value",
                (name, value),
            )

    def stats(self) -> CacheStats:
        with self._db() as db:
            counts = dict(db.execute("select name, value from counters").fetchall())
            entries, size = db.execute(
                "select count(*), coalesce(sum(size), 0) from entries"
            ).fetchone()
        return CacheStats(
            int(counts.get("hits", 0)),
            int(counts.get("misses", 0)),
            int(counts.get("hit_bytes", 0)),
            int(counts.get("miss_bytes", 0)),
            int(entries),
            int(size),
        )
