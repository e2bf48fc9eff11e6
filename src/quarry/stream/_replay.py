"""Publish stored bars as a live feed would: one snapshot per bar time, paced or at once.

For tests, demos and benchmarks: bars from a store (as known at ``as_of``) or from a file
(Parquet, Arrow IPC or CSV with instrument, date and fields), grouped by bar time, each
group one Arrow IPC snapshot carrying its publication time (header
``quarry-published-at``), which the stream reads to measure its lag. ``speed`` replays at
N times the bars' own pace; ``rate`` at a fixed number of snapshots a second; neither
(``max``): as fast as the broker takes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from quarry.exceptions import UsageError
from quarry.stream._brokers import Broker
from quarry.stream._runner import PUBLISHED_AT
from quarry.stream._snapshots import encode

__all__ = ["ReplaySummary", "read_bar_file", "replay", "snapshots"]

FIELDS = ("open", "high", "low", "close", "volume", "vwap")


@dataclass(frozen=True)
class ReplaySummary:
    snapshots: int
    bars: int
    duplicates: int  # snapshots the broker already had (their ids were published before)
    seconds: float
    first: str | None
    last: str | None
    behind_ms_max: float  # how far the publisher fell behind its pace


def read_bar_file(path: str | Path) -> pl.DataFrame:
    """Bars from a Parquet, Arrow IPC or CSV file with instrument, date and fields."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such file; give a Parquet, Arrow or CSV file of bars")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(p)
        elif suffix in (".arrow", ".ipc", ".feather"):
            frame = pl.read_ipc(p)
        elif suffix == ".csv":
            frame = pl.read_csv(p, try_parse_dates=True)
        else:
            raise UsageError(f"{p}: give a .parquet, .arrow or .csv file of bars")
    except pl.exceptions.PolarsError as e:
        raise UsageError(f"{p}: cannot read the bars ({e})") from None
    for column in ("instrument", "date"):
        if column not in frame.columns:
            raise UsageError(f"{p}: no {column!r} column; bars need instrument and date")
    return frame


def snapshots(
    bars: pl.DataFrame, start: datetime | None = None, end: datetime | None = None
) -> Iterator[tuple[datetime, pl.DataFrame]]:
    """The bars grouped by time, in time order, within [start, end]."""
    frame = bars
    dtype = frame.schema["date"]
    if dtype == pl.Date:  # daily bars: the day at midnight UTC
        frame = frame.with_columns(pl.col("date").cast(pl.Datetime("us")))
        dtype = frame.schema["date"]
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:  # naive: read as UTC
        frame = frame.with_columns(pl.col("date").dt.replace_time_zone("UTC"))
    elif not isinstance(dtype, pl.Datetime):
        raise UsageError(f"the bars' date column holds {dtype}, not dates or times")
    if start is not None:
        frame = frame.filter(pl.col("date") >= start)
    if end is not None:
        frame = frame.filter(pl.col("date") <= end)
    fields = [c for c in frame.columns if c in FIELDS]
    frame = frame.select("instrument", "date", *fields).sort("date", "instrument")
    for (when,), part in frame.group_by(["date"], maintain_order=True):
        yield when, part.drop("date")


def replay(
    broker: Broker,
    subject: str,
    bars: pl.DataFrame,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    speed: float | None = None,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplaySummary:
    """Publish ``bars`` to ``subject`` as snapshots; see the module's docstring."""
    t0 = time.perf_counter()
    first_bar: datetime | None = None
    n = rows = dup = 0
    behind = 0.0
    first = last = None
    for when, part in snapshots(bars, start, end):
        if first_bar is None:
            first_bar = when
        due = None
        if rate:
            due = t0 + n / rate
        elif speed:
            due = t0 + (when - first_bar).total_seconds() / speed
        if due is not None:
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            else:
                behind = max(behind, -wait * 1000)
        body = encode(when, part)
        key = when.isoformat()
        fresh = broker.publish(
            subject, body, msg_id=f"bars:{key}", headers={PUBLISHED_AT: repr(time.time())}
        )
        dup += not fresh
        n += 1
        rows += part.height
        first = first or key
        last = key
        if progress is not None:
            progress(n)
    return ReplaySummary(n, rows, dup, time.perf_counter() - t0, first, last, behind)
