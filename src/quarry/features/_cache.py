"""A feature cache that later runs reuse, keyed by what each value depends on.

An entry is a directory for one set of rows: the store, the commits of the tables that
decide the rows (bars, and the universe when one is asked for), the universe, ``as_of``
and the dates. It holds ``rows.parquet`` (instrument, date) and one single-column file per
expression, named by the hash of the expression's text and of the commits of the tables
its values depend on (corporate actions for adjusted prices, fundamentals when it reads
them). A correction commits a new version of a table, so it changes the keys of exactly
the entries that read that table; old entries are simply never looked up again.

Entries are written under temporary names and renamed into place when complete, so a run
that fails or races another never leaves a half-written entry behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from quarry._json import digest
from quarry.data import Store
from quarry.data._store import to_utc
from quarry.data._text_fields import TextField, is_text_field
from quarry.features._expr import Expr
from quarry.features._grid import BY_DATE, BY_INSTRUMENT
from quarry.settings import quarry_home

__all__ = ["CacheEntry", "FeatureCache", "data_state"]

BAR_FIELDS = frozenset({"open", "high", "low", "close", "volume", "vwap", "factor"})
VALUE = "value"
ROWS = "rows.parquet"
_BATCH = 1 << 18  # rows per batch when assembling an output from entries


def _commit_state(store: Store, table: str, as_of: datetime | None) -> str | None:
    """The newest commit of ``table`` known at ``as_of``: its id and commit time (a store
    rebuilt at the same path restarts its versions, the time tells them apart)."""
    known = [c for c in store.commits(table) if as_of is None or c.knowledge_time <= as_of]
    if not known:
        return None
    last = max(known, key=lambda c: c.version)
    return f"{last.id}/{last.committed_at.isoformat()}"


@dataclass(frozen=True)
class DataState:
    """What the rows and the values of one read depend on."""

    rows_key: str
    value_tables: dict[str, str | None]
    # The version of each scorer a text field may read: its own, or the newest written.
    scorer_versions: Mapping[str, str | None] = field(default_factory=dict)

    def expr_key(self, expr: Expr) -> str:
        """The cache key of one expression's values over these rows."""
        fields = {n.name for n in expr.walk() if n.op == "$"}
        tables = {"corporate_actions": self.value_tables.get("corporate_actions")}
        text = {f for f in fields if is_text_field(f)}
        if fields - BAR_FIELDS - text:
            tables["fundamentals"] = self.value_tables.get("fundamentals")
        if text:
            # Stories and their cached scores, and the version of each scorer read (a
            # dictionary scorer's new word list scores every story anew).
            tables["events"] = self.value_tables.get("events")
            tables["event_scores"] = self.value_tables.get("event_scores")
            scorers = sorted({s for f in text if (s := TextField.parse(f).scorer)})
            tables["scorers"] = ",".join(f"{s}={self.scorer_versions.get(s)}" for s in scorers)
        return digest({"expr": str(expr), "tables": tables})


def data_state(
    store: Store,
    *,
    as_of: datetime | str | None,
    universe: str | None,
    start: date | None,
    end: date | None,
) -> DataState:
    """The keys of a read of adjusted bars from ``store``, before reading anything."""
    when = to_utc(as_of)
    uri = store.location.uri
    rows = {
        "store": uri if "://" in uri else os.path.abspath(uri),
        "bars": _commit_state(store, "bars", when),
        "universe": universe,
        "universe_commit": _commit_state(store, "universe", when) if universe else None,
        "as_of": when.isoformat() if when else None,
        "start": start,
        "end": end,
    }
    value_tables = {
        t: _commit_state(store, t, when)
        for t in ("corporate_actions", "fundamentals", "events", "event_scores")
    }
    return DataState(digest(rows), value_tables, _ScorerVersions(store, when))


class _ScorerVersions(Mapping[str, "str | None"]):
    """Scorer versions looked up when a text field asks (most reads have none)."""

    def __init__(self, store: Store, as_of: datetime | None) -> None:
        self._store = store
        self._as_of = as_of
        self._seen: dict[str, str | None] = {}

    def __getitem__(self, name: str) -> str | None:
        if name not in self._seen:
            from quarry.data._event_scores import current_version

            self._seen[name] = current_version(self._store, name, self._as_of)
        return self._seen[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._seen)

    def __len__(self) -> int:
        return len(self._seen)


class FeatureCache:
    """Entries under ``root`` (default ``$QUARRY_HOME/cache/features``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else quarry_home() / "cache" / "features"

    def entry(self, state: DataState) -> CacheEntry:
        return CacheEntry(self.root / state.rows_key)


@dataclass(frozen=True)
class CacheEntry:
    """The cached rows and expression columns of one data state."""

    path: Path

    def has_rows(self) -> bool:
        return (self.path / ROWS).is_file()

    def has(self, key: str) -> bool:
        return self.has_rows() and (self.path / f"{key}.parquet").is_file()

    def writer(self, columns: dict[str, str]) -> EntryWriter:
        """A writer of the chunks of a computation: ``columns`` maps each output name to
        its expression key."""
        return EntryWriter(self, columns)

    def assemble(
        self, columns: Sequence[tuple[str, str]], sink: Callable[[pl.DataFrame], None]
    ) -> int:
        """Stream the rows and the ``(name, key)`` columns, in batches, to ``sink``;
        returns the number of rows."""
        files = [pq.ParquetFile(self.path / ROWS)]
        files += [pq.ParquetFile(self.path / f"{key}.parquet") for _, key in columns]
        names = [BY_INSTRUMENT, BY_DATE, *(name for name, _ in columns)]
        rows = 0
        batches = zip(*(f.iter_batches(batch_size=_BATCH) for f in files), strict=True)
        for parts in batches:
            arrays = [*parts[0].columns, *(p.column(0) for p in parts[1:])]
            table = pa.Table.from_arrays(arrays, names=names)
            rows += table.num_rows
            frame = pl.from_arrow(table)
            assert isinstance(frame, pl.DataFrame)
            sink(frame)
        return rows


class EntryWriter:
    """Writes each chunk's rows (unless cached already) and each column to its own file,
    then moves the complete files into the entry."""

    def __init__(self, entry: CacheEntry, columns: dict[str, str]) -> None:
        self.entry = entry
        self.columns = columns
        entry.path.mkdir(parents=True, exist_ok=True)
        self.tag = f".{os.getpid()}.partial"
        self.write_rows = not entry.has_rows()
        self._files: dict[str, pq.ParquetWriter] = {}

    def _target(self, name: str) -> Path:
        return self.entry.path / (ROWS if name == "" else f"{self.columns[name]}.parquet")

    def _append(self, name: str, table: pa.Table) -> None:
        if name not in self._files:
            tmp = self._target(name).with_name(self._target(name).name + self.tag)
            self._files[name] = pq.ParquetWriter(
                tmp, table.schema, compression="zstd", compression_level=1, use_dictionary=False
            )
        self._files[name].write_table(table)

    def write(self, part: pl.DataFrame) -> None:
        if self.write_rows:
            self._append("", part.select(BY_INSTRUMENT, BY_DATE).to_arrow())
        for name in self.columns:
            self._append(name, part.select(pl.col(name).alias(VALUE)).to_arrow())

    def close(self) -> None:
        for name, file in self._files.items():
            file.close()
            target = self._target(name)
            target.with_name(target.name + self.tag).replace(target)
        self._files.clear()

    def abort(self) -> None:
        for name, file in self._files.items():
            file.close()
            target = self._target(name)
            target.with_name(target.name + self.tag).unlink(missing_ok=True)
        self._files.clear()
