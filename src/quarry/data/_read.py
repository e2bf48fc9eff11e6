"""Point-in-time reads: bars (raw or adjusted), universes, fundamentals, and dense panels."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import numpy as np
import polars as pl

from quarry.data._resolve import read_latest
from quarry.data._schemas import BARS
from quarry.data._store import Store, to_utc
from quarry.exceptions import DataError, UsageError

__all__ = [
    "Panel",
    "adjustment_factors",
    "apply_adjustment",
    "fundamental_fields",
    "members",
    "read_bars",
    "to_panel",
]

PRICE_FIELDS = ("open", "high", "low", "close", "vwap")
BAR_FIELDS = tuple(BARS.values)
Adjust = Literal["raw", "adjusted"]


def _as_date(value: date | str | None, what: str) -> date | None:
    if value is None or isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{what}: cannot parse date {value!r}; use YYYY-MM-DD") from None


def _empty(fields: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame(
        schema={"instrument": pl.String, "date": pl.Date, **dict.fromkeys(fields, pl.Float64)}
    )


def fundamental_fields(store: Store, as_of: datetime | str | None = None) -> list[str]:
    """The fundamental field names known at ``as_of``."""
    lf = store.scan("fundamentals", as_of=as_of)
    if lf is None:
        return []
    return sorted(lf.select(pl.col("field").unique()).collect()["field"].to_list())


def adjustment_factors(store: Store, as_of: datetime | str | None = None) -> pl.DataFrame:
    """Cumulative adjustment factor per instrument from each known corporate action's ex-date.

    A split of ratio r multiplies the factor by r; a cash dividend D multiplies it by
    P / (P - D), with P the raw close on the last trading day before the ex-date. A factor
    only ever changes from an ex-date on, so a later action never alters an earlier value.
    Returns columns instrument, ex_date, cum_factor, sorted by instrument and ex_date.
    """
    out_schema = {"instrument": pl.String, "ex_date": pl.Date, "cum_factor": pl.Float64}
    acts_lf = store.scan("corporate_actions", as_of=as_of)
    if acts_lf is None:
        return pl.DataFrame(schema=out_schema)
    acts = acts_lf.select("instrument", "ex_date", "kind", "ratio", "amount").collect()
    if acts.height == 0:
        return pl.DataFrame(schema=out_schema)
    steps = acts.filter(pl.col("kind") == "split").select(
        "instrument", "ex_date", pl.col("ratio").alias("step")
    )
    divs = acts.filter(pl.col("kind") == "dividend").sort("instrument", "ex_date")
    if divs.height:
        bars = store.scan("bars", as_of=as_of)
        if bars is None:
            raise DataError(
                f"{store.location}: dividends need raw closes to adjust prices, and the store "
                "has no bars; ingest bars first"
            )
        closes = (
            bars.filter(pl.col("instrument").is_in(divs["instrument"].unique().implode()))
            .select("instrument", "date", "close")
            .sort("instrument", "date")
            .collect()
        )
        prev = divs.join_asof(
            closes,
            left_on="ex_date",
            right_on="date",
            by="instrument",
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,
        )
        div_steps = prev.select(
            "instrument",
            "ex_date",
            (pl.col("close") / (pl.col("close") - pl.col("amount"))).alias("step"),
        )
        steps = pl.concat([steps, div_steps])
    # An action with no usable step (no close before it) leaves the factor unchanged.
    steps = steps.with_columns(pl.col("step").fill_null(1.0).fill_nan(1.0))
    return (
        steps.group_by("instrument", "ex_date")
        .agg(pl.col("step").product())
        .sort("instrument", "ex_date")
        .select(
            "instrument",
            "ex_date",
            pl.col("step").cum_prod().over("instrument").alias("cum_factor"),
        )
    )


def members(
    store: Store,
    universe: str,
    as_of: datetime | str | None = None,
) -> pl.DataFrame:
    """The membership spans of a universe known at ``as_of``: instrument, start, end.

    Delisted instruments keep their spans: a universe read on a past date has the members of
    that date, not today's survivors.
    """
    lf = store.scan("universe", as_of=as_of)
    spans = (
        lf.filter(pl.col("universe") == universe).select("instrument", "start", "end").collect()
        if lf is not None
        else pl.DataFrame()
    )
    if spans.height == 0:
        known = (
            sorted(lf.select(pl.col("universe").unique()).collect()["universe"].to_list())
            if lf is not None
            else []
        )
        hint = f"; known universes: {', '.join(known)}" if known else ""
        raise UsageError(f"{store.location}: no universe named {universe!r}{hint}")
    return spans


def _fundamentals_daily(
    store: Store, fields: Sequence[str], as_of: datetime | str | None
) -> pl.LazyFrame:
    """Each fundamental's value as a step function of date, visible from its knowledge_date.

    On a date the value is that of the latest period_end published so far (the newest
    restatement of it); a restatement of an older period does not displace a newer period.
    """
    when = to_utc(as_of)
    lf = store.scan("fundamentals", as_of=when)
    if lf is None:
        schema = {"instrument": pl.String, "knowledge_date": pl.Date}
        return pl.LazyFrame(schema={**schema, **dict.fromkeys(fields, pl.Float64)})
    lf = lf.filter(pl.col("field").is_in(list(fields)))
    if when is not None:
        lf = lf.filter(pl.col("knowledge_date") <= when.date())
    ordered = lf.select("instrument", "field", "period_end", "knowledge_date", "value").sort(
        "instrument", "field", "knowledge_date", "period_end"
    )
    effective = ordered.filter(
        pl.col("period_end") >= pl.col("period_end").cum_max().over("instrument", "field")
    )
    # Several rows published the same day: the one of the newest period wins.
    return (
        effective.group_by("instrument", "field", "knowledge_date")
        .agg(pl.col("value").sort_by("period_end").last())
        .collect()
        .pivot("field", index=["instrument", "knowledge_date"], values="value")
        .lazy()
        .sort("instrument", "knowledge_date")
    )


def read_bars(
    store: Store,
    fields: Sequence[str] = ("open", "high", "low", "close", "volume"),
    *,
    start: date | str | None = None,
    end: date | str | None = None,
    universe: str | None = None,
    as_of: datetime | str | None = None,
    adjust: Adjust = "raw",
    instruments: Sequence[str] | None = None,
) -> pl.DataFrame:
    """A long table of instrument, date and the requested fields, known at ``as_of``.

    Fields are bar columns (open, high, low, close, volume, vwap, factor) or fundamental
    fields, which carry their latest published value forward. With ``adjust="adjusted"``
    prices are multiplied and volume divided by the cumulative factor of the actions up to
    each date (``factor`` then returns that factor). With ``universe`` only rows on dates the
    instrument was a member are kept. Sorted by instrument, then date.

    Examples
    --------
    >>> read_bars(store, ["close"], start="2020-01-01", as_of="2020-06-30")  # doctest: +SKIP
    """
    fields = list(dict.fromkeys(fields))
    if adjust not in ("raw", "adjusted"):
        raise UsageError(f"adjust must be raw or adjusted, not {adjust!r}")
    when = to_utc(as_of)
    start_d, end_d = _as_date(start, "start"), _as_date(end, "end")
    if store.table("bars") is None:
        store.require()
        return _empty(fields)
    bar_fields = [f for f in fields if f in BAR_FIELDS]
    other = [f for f in fields if f not in BAR_FIELDS]
    if other:
        # Fields are checked against all that was ever stored: a field not yet known at
        # as_of is a column of empty values, not an error.
        known = fundamental_fields(store)
        for f in other:
            if f not in known:
                valid = [*BAR_FIELDS, *known]
                close = difflib.get_close_matches(f, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise UsageError(f"unknown field {f!r}{hint} (fields: {', '.join(valid)})")

    conditions = []
    if when is not None:  # a bar dated after as_of cannot have been known then
        conditions.append(pl.col("date") <= when.date())
    if start_d is not None:
        conditions.append(pl.col("date") >= start_d)
    if end_d is not None:
        conditions.append(pl.col("date") <= end_d)
    if instruments is not None:
        conditions.append(pl.col("instrument").is_in(list(instruments)))
    need = set(bar_fields)
    if adjust == "adjusted":
        need.add("factor")
    df = read_latest(
        store,
        BARS,
        [f for f in BAR_FIELDS if f in need],
        pl.all_horizontal(conditions) if conditions else None,
        when,
    )
    if universe is not None:
        spans = members(store, universe, when)
        df = (
            df.lazy()
            .join(spans.lazy(), on="instrument", how="inner", maintain_order="left")
            .filter(
                (pl.col("date") >= pl.col("start"))
                & (pl.col("end").is_null() | (pl.col("date") <= pl.col("end")))
            )
            .drop("start", "end")
            .unique(["instrument", "date"], keep="first", maintain_order=True)
            .collect()
        )

    if adjust == "adjusted":
        df = apply_adjustment(df, adjustment_factors(store, when))
    if other:
        daily = _fundamentals_daily(store, other, when).collect()
        for f in other:
            if f not in daily.columns:
                daily = daily.with_columns(pl.lit(None, pl.Float64).alias(f))
        df = df.join_asof(
            daily.select("instrument", "knowledge_date", *other),
            left_on="date",
            right_on="knowledge_date",
            by="instrument",
            strategy="backward",
            check_sortedness=False,
        ).drop("knowledge_date", strict=False)
    return df.select("instrument", "date", *fields)


def apply_adjustment(df: pl.DataFrame, factors: pl.DataFrame) -> pl.DataFrame:
    """Apply cumulative factors: prices times factor, volume divided by it.

    Instruments with known corporate actions use the factor they imply; others keep the
    vendor's factor column, or 1 when the vendor gave none.
    """
    if factors.height:
        df = df.join_asof(
            factors,
            left_on="date",
            right_on="ex_date",
            by="instrument",
            strategy="backward",
            check_sortedness=False,
        )
        has_actions = pl.col("instrument").is_in(factors["instrument"].unique().implode())
        factor = (
            pl.when(has_actions)
            .then(pl.col("cum_factor").fill_null(1.0))
            .otherwise(pl.col("factor"))
        )
        df = df.with_columns(factor.alias("factor")).drop("ex_date", "cum_factor")
    f = pl.col("factor").fill_null(1.0)
    return df.with_columns(
        f.alias("factor"),
        *[(pl.col(p) * f).alias(p) for p in PRICE_FIELDS if p in df.columns],
        *([(pl.col("volume") / f).alias("volume")] if "volume" in df.columns else []),
    )


@dataclass(frozen=True)
class Panel:
    """Dense arrays for vectorized work: ``values[field]`` is dates x instruments, NaN where
    there is no row."""

    dates: np.ndarray
    instruments: list[str]
    values: dict[str, np.ndarray]

    def __getitem__(self, field: str) -> np.ndarray:
        return self.values[field]


def to_panel(long: pl.DataFrame, fields: Sequence[str] | None = None) -> Panel:
    """Scatter a long (instrument, date, fields...) table into dense dates x instruments arrays."""
    fields = (
        [c for c in long.columns if c not in ("instrument", "date")]
        if fields is None
        else list(fields)
    )
    dates = long["date"].unique().sort()
    instruments = long["instrument"].unique().sort()
    di = dates.search_sorted(long["date"]).to_numpy()
    ii = instruments.search_sorted(long["instrument"]).to_numpy()
    values: dict[str, np.ndarray] = {}
    for f in fields:
        arr = np.full((dates.len(), instruments.len()), np.nan)
        arr[di, ii] = long[f].cast(pl.Float64).fill_null(np.nan).to_numpy()
        values[f] = arr
    return Panel(dates.to_numpy(), instruments.to_list(), values)
