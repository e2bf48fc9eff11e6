"""Features from a store (or a frame of bars) to Parquet: the path the command line and
workflows take.

From a store, the cache is asked first: expressions already computed over the same rows
and commits are reused, the rest computed out-of-core into the cache, and the output is
assembled from the entry. When everything is cached, no bar is read at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from quarry.exceptions import DataError
from quarry.executors import Executor
from quarry.features._cache import FeatureCache, data_state
from quarry.features._compile import LABEL, Plan
from quarry.features._expr import Expr
from quarry.features._grid import Grid
from quarry.features._outofcore import (
    Progress,
    TableOut,
    compute_chunks,
    compute_to_file,
    plan_metadata,
)

if TYPE_CHECKING:  # a frame of bars never loads the store's libraries (Delta Lake)
    from quarry.data import Store

__all__ = ["Materialized", "materialize"]


@dataclass(frozen=True)
class Materialized:
    """What ``materialize`` wrote and how: rows, chunks, and which outputs came from the
    cache."""

    path: Path
    rows: int
    features: int
    chunks: int
    instruments_per_chunk: int
    cached: tuple[str, ...]
    computed: tuple[str, ...]


def materialize(
    source: Store | pl.DataFrame,
    features: Mapping[str, Expr | str],
    out: Path,
    *,
    label: Expr | str | None = None,
    universe: str | None = None,
    as_of: datetime | str | None = None,
    start: date | None = None,
    end: date | None = None,
    memory: str | None = None,
    cache: FeatureCache | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    allow_empty: bool = False,
) -> Materialized:
    """Compute ``features`` (and ``label`` as LABEL0) into Parquet at ``out``.

    ``source`` is a store (adjusted bars as known at ``as_of``) or a frame of bars.
    Windows use all history; only rows from ``start`` to ``end`` (and, from a store, on
    dates the instrument was a member of ``universe``) are written. With ``cache``, a
    store's results are reused across runs and corrections (see ``_cache``). ``executor``
    computes the chunks (see ``compute_chunks``); the output is the same with any.

    When no row falls in the window (or the universe), ``DataError`` says so in one line,
    before anything is computed: a research run over nothing is a mistake to report. With
    ``allow_empty`` (serving asked about a weekend), a file of no rows is written instead,
    with the columns and types a non-empty run writes.
    """
    plan = Plan.build(features, label=label)  # parse and look-ahead checks before reading
    names = list(plan.outputs)
    if isinstance(source, pl.DataFrame) or cache is None:
        grid, emit = _lay_out(source, plan, universe, as_of, start, end)
        if not allow_empty:
            _refuse_nothing(grid, emit, universe, as_of, start, end)
        done = compute_to_file(grid, plan, out, emit=emit, memory=memory, progress=progress,
                                  executor=executor)  # fmt: skip
        return Materialized(
            out, done.rows, len(names), done.chunks, done.instruments_per_chunk, (), tuple(names)
        )

    state = data_state(source, as_of=as_of, universe=universe, start=start, end=end)
    entry = cache.entry(state)
    keys = {name: state.expr_key(e) for name, e in plan.outputs.items()}
    missing = [name for name in names if not entry.has(keys[name])]
    chunks = size = 0
    if missing:
        sub = Plan.build(
            {n: plan.outputs[n] for n in missing if n != LABEL},
            label=plan.outputs[LABEL] if LABEL in missing else None,
        )
        grid, emit = _lay_out(source, sub, universe, as_of, start, end)
        if not allow_empty:
            _refuse_nothing(grid, emit, universe, as_of, start, end)
        writer = entry.writer({n: keys[n] for n in missing})
        done = compute_chunks(grid, sub, writer, emit=emit, memory=memory, progress=progress,
                              executor=executor)  # fmt: skip
        chunks, size = done.chunks, done.instruments_per_chunk
        del grid, emit
    output = TableOut(out, plan_metadata(plan), columns=names)
    try:
        rows = entry.assemble([(n, keys[n]) for n in names], output.write)
        if rows == 0 and not allow_empty:  # an entry of no rows, cached by an allow_empty run
            _refuse_nothing(None, None, universe, as_of, start, end)
    except BaseException:
        output.abort()
        raise
    output.close()
    cached = tuple(n for n in names if n not in missing)
    return Materialized(out, rows, len(names), chunks, size, cached, tuple(missing))


def _lay_out(
    source: Store | pl.DataFrame,
    plan: Plan,
    universe: str | None,
    as_of: datetime | str | None,
    start: date | None,
    end: date | None,
) -> tuple[Grid, np.ndarray]:
    """The bars as panels, and the cells to write."""
    if isinstance(source, pl.DataFrame):
        frame = source
    else:
        from quarry.data import read_bars

        frame = read_bars(source, sorted(plan.fields), as_of=as_of, adjust="adjusted")
    if frame.height == 0:
        raise DataError(f"{source}: no bars to compute features on")
    plan.check_fields(frame.columns)
    groups = plan.group_fields
    grid = Grid.from_frame(
        frame, sorted(plan.fields - groups), groups=sorted(groups), keep_rows=False
    )
    del frame  # the panels hold everything from here on
    emit = grid.present.copy()
    days = grid.calendar
    from quarry.data import key_bound

    # A date bounds intraday bars by its whole day; a time bounds daily bars by its day.
    # Bounds are UTC: times in another zone, or without one (read as UTC), compare in UTC.
    timed = days.dtype != pl.Date
    if isinstance(days.dtype, pl.Datetime):
        zone = days.dtype.time_zone
        days = (
            days.dt.replace_time_zone("UTC") if zone is None else days.dt.convert_time_zone("UTC")
        )
    if start is not None:
        emit[:, (days < key_bound(start, timed, False)).to_numpy()] = False
    if end is not None:
        emit[:, (days > key_bound(end, timed, True)).to_numpy()] = False
    if universe is not None:
        if isinstance(source, pl.DataFrame):
            raise DataError("a universe needs a store to read its members from")
        from quarry.data import read_bars

        members = read_bars(source, ["close"], as_of=as_of, universe=universe)
        emit &= grid.cells_of(members)
    return grid, emit


def _refuse_nothing(
    grid: Grid | None,
    emit: np.ndarray | None,
    universe: str | None,
    as_of: datetime | str | None,
    start: date | None,
    end: date | None,
) -> None:
    """``DataError`` when no cell is to be written, naming the window, the universe and,
    when the bars were read, the days they cover."""
    if emit is not None and emit.any():
        return
    window = f"from {start or 'the first bar'} to {end or 'the last bar'}"
    where = f" in universe {universe!r}" if universe is not None else ""
    known = f" as of {as_of}" if as_of is not None else ""
    have = ""
    if grid is not None and grid.calendar.len():
        first, last = str(grid.calendar.min()), str(grid.calendar.max())
        have = f" (the bars run from {first} to {last})"
    raise DataError(f"no bar {window}{where}{known}{have}: the window and universe match no "
                    "rows; choose dates with bars, or another universe")  # fmt: skip
