"""The point-in-time store: Delta Lake tables with Quarry's bitemporal semantics on top.

Each table is one Delta table under the store root. Delta gives us atomic commits (a commit is
visible only once its log entry exists, so a killed writer leaves the previous version intact),
optimistic concurrency, time travel and S3. Quarry adds knowledge time: every row carries the
knowledge time (``_kt``) and table version (``_version``) of the commit that wrote it, so
``as_of=T`` means "the latest row of each key among commits known at T", whatever order the
commits arrived in.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from quarry.data._location import Location, parse_location
from quarry.data._order import sort_by_key
from quarry.data._schemas import (
    DELETED,
    INTRADAY_BARS,
    KT,
    KT_DTYPE,
    TABLES,
    VERSION,
    TableSpec,
    table_spec,
)
from quarry.exceptions import ConflictError, DataError, StoreNotFoundError, UsageError

__all__ = ["Commit", "Store", "commits_of", "to_utc"]

_META = "quarry"  # prefix of our keys in a Delta commit's custom metadata
# One row group per file: a file then decodes into one contiguous array per column, which a
# read can patch in place (a chunked column would be copied whole). Pruning happens per file,
# from Delta's statistics; smaller row groups would prune little more, as rows are in key order.
_ROW_GROUP = 1 << 26
_TARGET_FILE = 128 * 1024 * 1024


@dataclass(frozen=True)
class Commit:
    """One commit of one table: what ``quarry data versions`` lists."""

    table: str
    version: int
    knowledge_time: datetime
    committed_at: datetime
    rows: int
    corrections: int
    source: str
    retracted: int = 0
    # The knowledge time of the commit's latest row: later than ``knowledge_time`` only for a
    # commit whose rows became known one by one (see ``Store.commit``).
    known_until: datetime | None = None

    @property
    def id(self) -> str:
        return f"{self.table}@{self.version}"

    @property
    def last_known(self) -> datetime:
        """When the last of the commit's rows became known."""
        return self.known_until or self.knowledge_time

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "table": self.table,
            "version": self.version,
            "knowledge_time": self.knowledge_time.isoformat(),
            "known_until": self.last_known.isoformat(),
            "committed_at": self.committed_at.isoformat(),
            "rows": self.rows,
            "corrections": self.corrections,
            "retracted": self.retracted,
            "source": self.source,
        }


def to_utc(value: datetime | str | None) -> datetime | None:
    """A timezone-aware UTC datetime from a datetime or ISO string (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        from quarry.exceptions import UsageError

        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"cannot parse time {value!r}: use ISO 8601, e.g. 2024-03-01 or "
                "2024-03-01T16:00:00+00:00"
            ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class Store:
    """A point-in-time store at a directory or ``s3://bucket/prefix``.

    Parameters
    ----------
    location
        A directory (created on first write) or an S3 URI; S3 endpoint and credentials come
        from the usual ``AWS_*`` environment variables.

    Examples
    --------
    >>> store = Store("/tmp/quarry-store")            # doctest: +SKIP
    >>> store.read_bars(["close"], as_of="2020-06-30")  # doctest: +SKIP
    """

    def __init__(self, location: str | os.PathLike[str] | Location) -> None:
        self.location = location if isinstance(location, Location) else parse_location(location)

    def __repr__(self) -> str:
        return f"Store({self.location.uri!r})"

    def _repr_html_(self) -> str:
        """A notebook's view: each table's rows, dates and latest commit, from the Delta logs
        and file statistics (quick on a big store); no store there is said, not raised."""
        from quarry.data._html_view import store_html

        return store_html(self)

    # -- tables ------------------------------------------------------------------------------

    def table(self, name: str) -> DeltaTable | None:
        """The latest snapshot of a table, or None if nothing was ever committed to it."""
        spec = table_spec(name)
        try:
            return DeltaTable(
                self.location.child(spec.name), storage_options=self.location.storage_options
            )
        except TableNotFoundError:
            return None
        except (DeltaError, OSError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{self.location.child(spec.name)}: cannot open table: {first}"
            ) from exc

    def spec(self, name: str, dt: DeltaTable | None = None) -> TableSpec:
        """A table's spec as this store keeps it: its bars are daily or intraday, as the first
        bars committed to it made them."""
        spec = table_spec(name)
        if spec.name != "bars":
            return spec
        dt = dt if dt is not None else self.table("bars")
        if dt is not None and _timestamp(dt, "date"):
            return INTRADAY_BARS
        return spec

    def exists(self) -> bool:
        """Whether any table of the store has a commit."""
        return any(self.table(name) is not None for name in TABLES)

    def require_writable(self) -> None:
        """Raise UsageError for a store that is a mirror of a data service's dataset."""
        if self.location.origin is not None:
            raise UsageError(f"{self.location.origin}: a data service's dataset is read here "
                             "from a mirror; write to its own store on the server")  # fmt: skip

    def require(self) -> None:
        """Raise StoreNotFoundError unless the store holds data."""
        if not self.exists():
            raise StoreNotFoundError(
                f"no Quarry store at {self.location.uri}: create one with "
                "`quarry data generate` or `quarry data ingest`"
            )

    # -- writing -----------------------------------------------------------------------------

    def commit(
        self,
        spec: TableSpec,
        batches: pl.DataFrame | Iterable[pl.DataFrame],
        *,
        knowledge_time: datetime,
        base: DeltaTable | None,
        corrections: int = 0,
        source: str = "",
        retract: pl.DataFrame | None = None,
    ) -> Commit:
        """Append rows to a table as one atomic commit at ``knowledge_time``.

        ``base`` is the snapshot the caller's decisions were made on (None for a new table).
        If another writer committed after it, nothing is written and ConflictError is raised:
        the caller's view of "what changed" would be stale. ``retract`` holds keys that no
        longer hold from ``knowledge_time`` on; each becomes a retraction row in this commit.

        Rows that became known one by one (history written at once, as a generated market's
        bars, each known after its own close) carry their own knowledge time in a ``_kt``
        column, none later than ``knowledge_time``; the commit is then visible from its
        earliest row's time on, and each row from its own. One key must not appear twice in
        such a commit; in a snapshot table (universe) the rows sharing a ``_kt`` are the
        snapshot known from that time.
        """
        self.require_writable()
        version = 0 if base is None else base.version() + 1
        frame = (
            batches
            if isinstance(batches, pl.DataFrame)
            else pl.concat(list(batches), how="vertical", rechunk=False)
        )
        row_kt = frame[KT].cast(KT_DTYPE) if KT in frame.columns else None
        frame = spec.conform(frame).with_columns(pl.lit(False).alias(DELETED))
        if row_kt is not None:
            # Callers are Quarry's own (the generator): a violation is a bug, not bad input.
            late = row_kt.filter(row_kt.is_null() | (row_kt > knowledge_time))
            if late.len() or (retract is not None and retract.height):
                raise ValueError(
                    "per-row knowledge times must be set, not after the commit's, and come "
                    "without retractions"
                )
            frame = frame.with_columns(row_kt.alias(KT))
        retracted = 0 if retract is None else retract.height
        if retracted:
            assert retract is not None
            tombs = spec.conform(
                retract.select(spec.key).with_columns(
                    pl.lit(None, spec.column(v).dtype).alias(v) for v in spec.values
                )
            ).with_columns(pl.lit(True).alias(DELETED))
            frame = pl.concat([frame, tombs])
        rows = frame.height
        # Key order on disk is what lets reads skip sorting (see _resolve.py).
        frame = sort_by_key(frame, spec.key)
        # One contiguous batch: delta-rs writes the batches of a stream concurrently and so
        # out of order, and key order on disk is what lets reads skip a sort.
        stamps = [pl.lit(version, pl.Int64).alias(VERSION)]
        first_kt, last_kt = knowledge_time, knowledge_time
        if row_kt is None:
            stamps.append(pl.lit(knowledge_time, KT_DTYPE).alias(KT))
        elif frame.height:
            bounds = frame.select(pl.col(KT).min().alias("lo"), pl.col(KT).max().alias("hi"))
            first_kt, last_kt = bounds["lo"].item(), bounds["hi"].item()
        stamped = frame.with_columns(stamps).rechunk()
        schema = _arrow_schema(spec)
        data = stamped.select(schema.names).to_arrow().cast(schema).combine_chunks()
        meta = {
            f"{_META}.knowledge_time": first_kt.isoformat(),
            f"{_META}.known_until": last_kt.isoformat(),
            f"{_META}.corrections": str(corrections),
            f"{_META}.source": source,
            f"{_META}.retracted": str(retracted),
        }
        uri = self.location.child(spec.name)
        try:
            write_deltalake(
                base if base is not None else uri,
                data,
                mode="append" if base is not None else "error",
                storage_options=None if base is not None else self.location.storage_options,
                writer_properties=WriterProperties(
                    compression="ZSTD", max_row_group_size=_ROW_GROUP
                ),
                target_file_size=_TARGET_FILE,
                commit_properties=CommitProperties(custom_metadata=meta, max_commit_retries=0),
            )
        except CommitFailedError as exc:
            raise ConflictError(
                f"{uri}: another writer committed to {spec.name} while this ingest ran "
                f"(expected version {version}); nothing was written, run it again"
            ) from exc
        except DeltaError as exc:
            if base is None and "exists" in str(exc).lower():
                raise ConflictError(
                    f"{uri}: another writer created {spec.name} while this ingest ran; "
                    "nothing was written, run it again"
                ) from exc
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"{uri}: commit failed: {first}; check that the store location is a "
                "writable directory or bucket"
            ) from exc
        except OSError as exc:
            raise DataError(f"{uri}: commit failed: {exc}") from exc
        return Commit(
            spec.name,
            version,
            first_kt,
            datetime.now(UTC),
            rows,
            corrections,
            source,
            retracted,
            last_kt,
        )

    # -- reading -----------------------------------------------------------------------------

    def scan_raw(self, name: str, dt: DeltaTable | None = None) -> pl.LazyFrame | None:
        """Every stored row of a table, all versions, with ``_kt`` and ``_version``.

        Files are scanned in the order of their smallest key. Rows are not in key order in
        general (several commits cover the same instruments); ``read_latest`` in
        ``_resolve.py`` gives key order cheaply.
        """
        dt = dt if dt is not None else self.table(name)
        if dt is None:
            return None
        spec = self.spec(name, dt)
        uris = dt.file_uris()
        if not uris:
            return pl.LazyFrame(schema=spec.stored_schema())
        k0, k1 = spec.key[0], spec.key[1]
        # Through the Arrow stream interface: pa.table() of it would import pandas (0.2 s).
        acts = pl.DataFrame(dt.get_add_actions(flatten=True))
        stats = acts.select("path", f"min.{k0}", f"min.{k1}")
        by_name = {u.rsplit("/", 1)[-1]: u for u in uris}
        ordered = stats.sort([f"min.{k0}", f"min.{k1}"], nulls_last=True)["path"].to_list()
        found = [by_name.get(p.rsplit("/", 1)[-1]) for p in ordered]
        files = [f for f in found if f is not None]
        if len(files) != len(uris):
            files = uris  # unexpected layout: fall back to Delta's order
        return pl.scan_parquet(
            files,
            storage_options=self.location.storage_options or None,
            hive_partitioning=False,
            schema=spec.stored_schema(),
        )

    def scan(
        self, name: str, as_of: datetime | str | None = None, dt: DeltaTable | None = None
    ) -> pl.LazyFrame | None:
        """What was known of a table at ``as_of`` (default: now): one row per key.

        Rows of commits with a knowledge time after ``as_of`` are invisible. Of the rest, each
        key keeps its row from the latest commit (by knowledge time, then version); a snapshot
        table keeps the whole latest commit of each snapshot group. Only instruments that were
        ever corrected pay for the de-duplication, so reading an uncorrected table is a scan.
        Rows come in no particular order.
        """
        spec = table_spec(name)
        dt = dt if dt is not None else self.table(spec.name)
        if dt is None:
            return None
        lf = self.scan_raw(spec.name, dt)
        assert lf is not None
        commits = commits_of(spec.name, dt)
        when = to_utc(as_of)
        if when is not None:
            lf = lf.filter(pl.col(KT) <= when)
            commits = [c for c in commits if c.knowledge_time <= when]
        if spec.semantics == "snapshot":
            by = list(spec.snapshot_by)
            return lf.filter(pl.col(KT) == pl.col(KT).max().over(by)).filter(
                pl.col(VERSION) == pl.col(VERSION).max().over(by)
            )
        overlapping = [c.version for c in commits if c.corrections > 0]
        if not overlapping:
            return lf  # no key has two rows, so none is retracted either
        split = spec.key[0]
        touched = (
            lf.filter(pl.col(VERSION).is_in(overlapping)).select(split).unique().collect()[split]
        )
        # Every row of a touched instrument goes through the de-duplication; the others pass.
        key = list(spec.key)
        dirty = (
            lf.filter(pl.col(split).is_in(touched.implode()))
            .sort([*key, KT, VERSION])
            .unique(key, keep="last", maintain_order=True)
        )
        clean = lf.filter(~pl.col(split).is_in(touched.implode()))
        return pl.concat([clean, dirty.filter(~pl.col(DELETED))])

    def commits(self, name: str | None = None) -> list[Commit]:
        """The commits of one table, or of all tables, oldest first."""
        names = [table_spec(name).name] if name else list(TABLES)
        out: list[Commit] = []
        for table in names:
            dt = self.table(table)
            if dt is not None:
                out.extend(commits_of(table, dt))
        return sorted(out, key=lambda c: (c.committed_at, c.table, c.version))


def _timestamp(dt: DeltaTable, column: str) -> bool:
    """Whether a Delta table's column holds timestamps."""
    field = next((f for f in dt.schema().fields if f.name == column), None)
    return field is not None and str(getattr(field.type, "type", "")).startswith("timestamp")


def _arrow_schema(spec: TableSpec) -> pa.Schema:
    schema = pl.DataFrame(schema=spec.stored_schema()).to_arrow().schema
    # Delta has one string type; large strings hold any table size (over 2 GiB of text).
    return pa.schema(
        [
            pa.field(f.name, pa.large_string()) if pa.types.is_string_view(f.type) else f
            for f in schema
        ]
    )


def commits_of(table: str, dt: DeltaTable) -> list[Commit]:
    out = []
    for entry in dt.history():
        kt = entry.get(f"{_META}.knowledge_time")
        if kt is None:
            continue  # not a Quarry commit (maintenance such as OPTIMIZE or VACUUM)
        metrics = entry.get("operationMetrics") or {}
        out.append(
            Commit(
                table=table,
                version=int(entry["version"]),
                knowledge_time=datetime.fromisoformat(kt),
                committed_at=datetime.fromtimestamp(entry["timestamp"] / 1000, UTC),
                rows=int(metrics.get("num_added_rows", 0)),
                corrections=int(entry.get(f"{_META}.corrections", 0)),
                source=str(entry.get(f"{_META}.source", "")),
                retracted=int(entry.get(f"{_META}.retracted", 0)),
                known_until=(
                    datetime.fromisoformat(until)
                    if (until := entry.get(f"{_META}.known_until"))
                    else None
                ),
            )
        )
    return out
