"""Ingest: validate a vendor file, work out what it changes, and commit only that."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from deltalake import DeltaTable

from quarry.data._events import prepare_events, retraction_checks
from quarry.data._resolve import read_latest
from quarry.data._schemas import ALL, BARS, INTRADAY_BARS, TableSpec, table_spec
from quarry.data._steps import last_known
from quarry.data._store import Commit, Store, to_utc
from quarry.data._times import first_timed
from quarry.data._validate import ROW, Check, check_frame, read_input
from quarry.exceptions import BadInputError, DataError, UsageError

__all__ = ["IngestResult", "ingest_file", "ingest_frame"]

# How far a knowledge time may be ahead of this machine's clock (clocks drift).
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did: rows read, new, corrected, unchanged and rejected, and its commit."""

    table: str
    rows_in: int
    new: int
    corrected: int
    unchanged: int
    rejected: int = 0
    rejects_path: str | None = None
    commit: Commit | None = None
    retracted: int = 0


def ingest_frame(
    store: Store,
    spec: TableSpec,
    frame: pl.DataFrame,
    *,
    knowledge_time: datetime | str | None = None,
    source: str = "",
    replace: bool = False,
) -> IngestResult:
    """Commit the rows of a valid frame that change what was known at ``knowledge_time``.

    The frame is trusted: it is not validated (vendor files go through ``ingest_file``).
    With ``replace`` the frame is the whole truth for its instruments (for bars: within its
    date range): a known key it lacks is retracted from ``knowledge_time`` on.

    A row whose key is new is added; a row whose key was known with other values is a
    correction, stored as a new version (nothing is overwritten); an identical row is skipped.
    A snapshot table (universe) commits the whole frame when it differs from the last snapshot.
    """
    store.require_writable()
    kt = to_utc(knowledge_time) or datetime.now(UTC)
    if spec.name == "bars":
        spec = _frame_bars_spec(store, frame)
    frame = spec.conform(frame)
    base = store.table(spec.name)
    if base is None:
        commit = store.commit(spec, frame, knowledge_time=kt, base=None, source=source)
        return IngestResult(spec.name, frame.height, frame.height, 0, 0, commit=commit)

    raw_lf = store.scan_raw(spec.name, base)
    assert raw_lf is not None
    if spec.semantics == "snapshot":
        known_lf = store.scan(spec.name, as_of=kt, dt=base)
        assert known_lf is not None
        return _ingest_snapshot(store, spec, frame, known_lf, base, kt, source)

    split = spec.key[0]
    touched = pl.col(split).is_in(frame[split].unique().implode())
    # Only the keys in the file matter: bound the read by its instruments and, for bars,
    # its dates, so that a daily file is compared with one day, not the whole history.
    between = None
    if len(spec.key) == 2 and frame.schema[spec.key[1]] in (pl.Date, pl.Datetime):
        between = (frame[spec.key[1]].min(), frame[spec.key[1]].max())
    known = read_latest(store, spec, spec.names, touched, kt, between)
    key = list(spec.key)
    known = known.with_columns(pl.lit(True).alias("__existed"))
    joined = frame.join(known, on=key, how="left", suffix="__old", nulls_equal=True)
    existed = pl.col("__existed").fill_null(False)
    # Null-safe equality: a vendor resending an empty value is not a change.
    same = pl.all_horizontal(
        [existed, *(pl.col(v).eq_missing(pl.col(f"{v}__old")) for v in spec.values)]
    )
    flagged = joined.with_columns(existed.alias("__existed"), same.alias("__same"))
    changed = flagged.filter(~pl.col("__same"))
    unchanged = flagged.height - changed.height
    corrected = int(changed["__existed"].sum())
    new = changed.height - corrected
    gone = known.select(key).join(frame.select(key), on=key, how="anti", nulls_equal=True)
    if not replace:
        gone = gone.clear()
    if changed.height == 0 and gone.height == 0:
        return IngestResult(spec.name, frame.height, 0, 0, unchanged)
    rows = changed.select(spec.names)
    # Rows whose key already has a version anywhere in the table (even one known only later
    # than this commit, as when backfilling) need de-duplication on read.
    in_rows = pl.col(split).is_in(rows[split].unique().implode())
    if between is not None:
        in_rows = in_rows & pl.col(spec.key[1]).is_between(*between)
    ever = raw_lf.filter(in_rows).select(key).unique().collect()
    overlaps = rows.join(ever, on=key, how="semi", nulls_equal=True).height
    commit = store.commit(
        spec,
        rows,
        knowledge_time=kt,
        base=base,
        corrections=overlaps + gone.height,
        source=source,
        retract=gone,
    )
    return IngestResult(
        spec.name, frame.height, new, corrected, unchanged, commit=commit, retracted=gone.height
    )


def _ingest_snapshot(
    store: Store,
    spec: TableSpec,
    frame: pl.DataFrame,
    known_lf: pl.LazyFrame,
    base: DeltaTable,
    kt: datetime,
    source: str,
) -> IngestResult:
    by = list(spec.snapshot_by)
    groups = frame.select(by).unique()
    known = known_lf.join(groups.lazy(), on=by, how="semi").select(spec.names).collect()
    order = list(spec.key)
    if known.sort(order).equals(frame.sort(order)):
        return IngestResult(spec.name, frame.height, 0, 0, frame.height)
    was = known.select(order)
    new = frame.join(was, on=order, how="anti", nulls_equal=True).height
    commit = store.commit(spec, frame, knowledge_time=kt, base=base, source=source)
    return IngestResult(spec.name, frame.height, new, frame.height - new, 0, commit=commit)


def ingest_file(
    store: Store,
    table: str,
    path: str | Path,
    *,
    knowledge_time: datetime | str | None = None,
    skip_bad: bool = False,
    universe: str | None = None,
    replace: bool = False,
) -> IngestResult:
    """Validate a CSV, JSON lines or Parquet vendor file and ingest it as one commit.

    By default any bad row fails the whole ingest (BadInputError, nothing written). With
    ``skip_bad`` the good rows are committed and the bad ones are written, with their line
    and reasons, to ``<file>.rejected.csv`` beside the input.
    """
    spec = table_spec(table)
    fixed: dict[str, object] = {}
    if spec.name == "universe":
        if not universe:
            raise UsageError("ingesting a universe needs its name: pass --name U")
        if universe.strip().lower() == ALL:
            raise UsageError(
                f"{path}: {universe!r} is the built-in universe of every instrument in the "
                "store and cannot be replaced; give this universe another --name"
            )
        if skip_bad:
            # A universe file replaces the whole membership: dropping a bad row would erase
            # that member's history (a survivorship leak), so it must be fixed instead.
            raise UsageError(
                f"{path}: --skip-bad does not apply to universe files, which replace the whole "
                "membership; fix the bad rows instead"
            )
        fixed["universe"] = universe
    now = datetime.now(UTC)
    kt = to_utc(knowledge_time) or now
    if kt > now + _CLOCK_SKEW:
        raise UsageError(
            f"knowledge time {kt.isoformat()} is in the future: a commit known later than now "
            "would shadow every correction made before then; give a past or present time"
        )
    raw, first_line = read_input(path)
    if spec.name == "events":
        raw = prepare_events(raw, kt)
    if spec.name == "bars":
        spec = _file_bars_spec(store, str(path), raw, first_line)
    checked = check_frame(
        str(path),
        spec,
        raw,
        first_line,
        fixed,
        knowledge_time=kt,
        lookups=lambda typed: _store_checks(store, spec, typed, kt),
    )
    rejects_path = None
    if checked.problems:
        if not skip_bad:
            raise BadInputError(str(path), checked.problems)
        rejects_path = f"{path}.rejected.csv"
        try:
            checked.rejected.write_csv(rejects_path)
        except OSError as exc:
            raise DataError(
                f"{rejects_path}: cannot write the rejected rows ({exc.strerror}); nothing was "
                "committed: make the input's folder writable or copy the file elsewhere"
            ) from exc
    if checked.good.height == 0:
        if checked.problems:
            raise BadInputError(str(path), [*checked.problems, f"{path}: no good rows to commit"])
        raise BadInputError(str(path), [f"{path}: the file has no rows"])
    if replace and skip_bad:
        raise UsageError(
            f"{path}: --replace with --skip-bad would retract the rows that were skipped; "
            "fix the bad rows or drop one of the two options"
        )
    good = checked.good
    if spec.name == "events":
        good = good.with_columns(pl.col("retracted").fill_null(False))
    result = ingest_frame(
        store, spec, good, knowledge_time=kt, source=Path(path).name, replace=replace
    )
    return IngestResult(
        result.table,
        raw.height,
        result.new,
        result.corrected,
        result.unchanged,
        checked.rejected.height,
        rejects_path,
        result.commit,
        result.retracted,
    )


def _file_bars_spec(store: Store, path: str, raw: pl.DataFrame, first_line: int) -> TableSpec:
    """Daily or intraday bars: as the store keeps them; a store's first bars decide, by
    whether the file's dates carry a time of day. A daily store refuses a file with times
    (an intraday store refuses bare dates row by row, as unparseable times)."""
    timed = first_timed(raw["date"]) if "date" in raw.columns else None
    if store.table("bars") is None:
        return INTRADAY_BARS if timed is not None else BARS
    spec = store.spec("bars")
    if timed is not None and not spec.intraday:
        unit = "line" if first_line == 2 else "row"
        raise UsageError(
            f"{path}: {unit} {timed + first_line}, column 'date': {raw['date'][timed]!s} "
            "has a time of day, and the store holds daily bars; a store keeps bars of one "
            "frequency: ingest intraday bars into a store of their own"
        )
    return spec


def _frame_bars_spec(store: Store, frame: pl.DataFrame) -> TableSpec:
    """The bars spec for a typed frame: a ``date`` of times is intraday, of dates daily (as
    are times all at midnight, unless the store holds intraday bars); it must be what the
    store holds."""
    column = frame["date"] if "date" in frame.columns else pl.Series([], dtype=pl.Date)
    held = store.spec("bars") if store.table("bars") is not None else None
    timed = isinstance(column.dtype, pl.Datetime)
    intraday = timed and (first_timed(column) is not None or (held is not None and held.intraday))
    spec = INTRADAY_BARS if intraday else BARS
    if held is not None and held != spec:
        raise UsageError(
            f"{store.location}: the store holds {'intraday' if held.intraday else 'daily'} "
            "bars and these are "
            f"{'intraday' if intraday else 'daily'} (a date column of "
            f"{frame.schema.get('date')}); a store keeps bars of one frequency"
        )
    return spec


def _store_checks(store: Store, spec: TableSpec, typed: pl.DataFrame, kt: datetime) -> list[Check]:
    """Checks of a file's rows against what the store knew at ``kt``.

    A cash dividend at or above the close before its ex-date would make the adjustment factor
    negative or infinite, and every adjusted read of the store would fail: refused whether the
    dividend comes after the bars (actions file) or the bars after the dividend (bars file).
    """
    if spec.name == "corporate_actions":
        return _dividends_against_closes(store, typed, kt)
    if spec.name == "bars":
        return _closes_against_dividends(store, typed, kt)
    if spec.name == "events":
        return retraction_checks(store, typed, kt)
    return []


_DIVIDEND_ADVICE = (
    "a dividend is cash per share and must be below the price it is paid from: check the amount "
    "(not a yield, a total or in another currency) and the ex-date"
)


def _dividends_against_closes(store: Store, typed: pl.DataFrame, kt: datetime) -> list[Check]:
    divs = (
        typed.filter(
            (pl.col("kind") == "dividend")
            & pl.col("amount").is_not_null()
            & pl.col("instrument").is_not_null()
            & pl.col("ex_date").is_not_null()
        )
        .select(ROW, "instrument", "ex_date", "amount")
        .sort("instrument", "ex_date")
    )
    if divs.height == 0 or store.table("bars") is None:
        return []
    closes = read_latest(
        store,
        BARS,
        ["close"],
        pl.col("instrument").is_in(divs["instrument"].unique().implode()),
        kt,
        between=(None, divs["ex_date"].max()),
    )
    prev = last_known(divs, closes, "ex_date", "date", ["close"], strict=True).values["close"]
    bad = divs["amount"].to_numpy() >= prev  # NaN (no close known before) compares False
    if not bad.any():
        return []
    rows = divs[ROW].filter(pl.Series(bad))
    detail = np.full(typed.height, None, dtype=object)
    detail[rows.to_numpy()] = [f"the close before it is {p:g}" for p in prev[bad]]
    return [
        Check(
            "dividend at or above the previous close in the store",
            "amount",
            pl.lit(typed[ROW].is_in(rows.implode())),
            _DIVIDEND_ADVICE,
            pl.lit(pl.Series(detail.tolist(), dtype=pl.String)),
        )
    ]


def _closes_against_dividends(store: Store, typed: pl.DataFrame, kt: datetime) -> list[Check]:
    mine = typed.filter(
        pl.col("instrument").is_not_null()
        & pl.col("date").is_not_null()
        & pl.col("close").is_finite()
        & (pl.col("close") >= 0)  # a negative close is reported on its own
    )
    if mine.height == 0:
        return []
    acts = store.scan("corporate_actions", as_of=kt)
    if acts is None:
        return []
    first = mine["date"].min()
    first_day = first.date() if isinstance(first, datetime) else first
    divs = (
        acts.filter(
            (pl.col("kind") == "dividend")
            & pl.col("amount").is_not_null()
            & pl.col("instrument").is_in(mine["instrument"].unique().implode())
            & (pl.col("ex_date") > first_day)
        )
        .select("instrument", "ex_date", "amount")
        .collect()
        .sort("instrument", "ex_date")
    )
    if divs.height == 0:
        return []
    # The closes each dividend will be paid from once this file is in: the store's, with the
    # file's rows over them.
    file_rows = mine.select("instrument", "date", "close", pl.col(ROW).cast(pl.Float64))
    known = read_latest(
        store,
        BARS,
        ["close"],
        pl.col("instrument").is_in(divs["instrument"].unique().implode()),
        kt,
        between=(first, divs["ex_date"].max()),
    ).with_columns(pl.lit(None, pl.Float64).alias(ROW))
    merged = pl.concat(
        [known.join(file_rows, on=["instrument", "date"], how="anti"), file_rows]
    ).sort("instrument", "date")
    found = last_known(divs, merged, "ex_date", "date", ["close", ROW], strict=True).values
    bad = (divs["amount"].to_numpy() >= found["close"]) & np.isfinite(found[ROW])
    if not bad.any():
        return []
    rows = found[ROW][bad].astype(np.int64)
    detail = np.full(typed.height, None, dtype=object)
    for r, d in zip(rows, divs.filter(pl.Series(bad)).iter_rows(named=True), strict=True):
        detail[r] = f"at or below the dividend {d['amount']:g} going ex on {d['ex_date']}"
    return [
        Check(
            "close at or below a dividend the store knows (paid from this close)",
            "close",
            pl.lit(typed[ROW].is_in(pl.Series(rows).cast(typed[ROW].dtype).implode())),
            _DIVIDEND_ADVICE,
            pl.lit(pl.Series(detail.tolist(), dtype=pl.String)),
        )
    ]
