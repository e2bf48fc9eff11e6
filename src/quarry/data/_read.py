"""Point-in-time reads: bars (raw or adjusted), universes, fundamentals, and dense panels."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

import numpy as np
import polars as pl

from quarry.data._resolve import read_latest
from quarry.data._schemas import ALL, BARS
from quarry.data._steps import last_known
from quarry.data._store import Store, to_utc
from quarry.data._text_fields import (
    check_text_fields,
    is_text_field,
    text_columns,
    text_field_examples,
)
from quarry.data._times import key_bound, parse_bound
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


def _empty(fields: Sequence[str], key: pl.DataType) -> pl.DataFrame:
    return pl.DataFrame(
        schema={"instrument": pl.String, "date": key, **dict.fromkeys(fields, pl.Float64)}
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
        if store.table("bars") is None:
            raise DataError(
                f"{store.location}: dividends need raw closes to adjust prices, and the store "
                "has no bars; ingest bars first"
            )
        closes = read_latest(
            store,
            BARS,
            ["close"],
            pl.col("instrument").is_in(divs["instrument"].unique().implode()),
            to_utc(as_of),
        )
        prev = last_known(divs, closes, "ex_date", "date", ["close"], strict=True).values["close"]
        bad = np.flatnonzero(divs["amount"].to_numpy() >= prev)  # NaN (no close) compares False
        if bad.size:
            row = divs.row(int(bad[0]), named=True)
            raise DataError(
                f"{store.location}: corporate_actions: dividend {row['amount']} of "
                f"{row['instrument']} on {row['ex_date']} is not below the previous close "
                f"{prev[bad[0]]} ({bad.size} such dividends); correct the amounts by ingesting "
                "a fixed actions file"
            )
        div_steps = divs.select(
            "instrument",
            "ex_date",
            (pl.lit(prev) / (pl.lit(prev) - pl.col("amount"))).alias("step"),
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


def _membership(df: pl.DataFrame, spans: pl.DataFrame) -> pl.Series:
    """Per row of a key-sorted frame: was its instrument a member of the universe that day?

    Spans become a coverage count per instrument (+1 from a start, -1 after an end), so
    overlapping or repeated spans need no de-duplication.
    """
    events = pl.concat(
        [
            spans.select("instrument", pl.col("start").alias("day"), pl.lit(1).alias("delta")),
            spans.filter(pl.col("end").is_not_null()).select(
                "instrument",
                (pl.col("end") + pl.duration(days=1)).alias("day"),
                pl.lit(-1).alias("delta"),
            ),
        ]
    )
    coverage = (
        events.group_by("instrument", "day")
        .agg(pl.col("delta").sum())
        .sort("instrument", "day")
        .with_columns(pl.col("delta").cum_sum().over("instrument").alias("members"))
    )
    found = last_known(df, coverage, "date", "day", ["members"]).values["members"]
    return pl.Series("member", np.nan_to_num(found, nan=0.0) > 0)


def members(
    store: Store,
    universe: str,
    as_of: datetime | str | None = None,
) -> pl.DataFrame:
    """The membership spans of a universe known at ``as_of``: instrument, start, end.

    Delisted instruments keep their spans: a universe read on a past date has the members of
    that date, not today's survivors. The built-in universe ``all`` is every instrument with
    bars known at ``as_of``, from its first bar to its last (end empty while it still trades:
    its last bar is on the last date known).
    """
    if universe == ALL:
        return _all_members(store, as_of)
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
        hint = f"; known universes: {', '.join([ALL, *known])}"
        when = f" as of {as_of}" if as_of is not None else ""
        raise UsageError(f"{store.location}: no universe named {universe!r} known{when}{hint}")
    return spans


def _all_members(store: Store, as_of: datetime | str | None) -> pl.DataFrame:
    when = to_utc(as_of)
    bars = read_latest(store, BARS, [], None, when, between=(None, when) if when else None)
    if bars.height == 0:
        return pl.DataFrame(schema={"instrument": pl.String, "start": pl.Date, "end": pl.Date})
    # Spans are days, whatever the bars' frequency.
    day = pl.col("date").cast(pl.Date)
    last_day = bars.select(day.max()).item()
    return (
        bars.group_by("instrument", maintain_order=True)
        .agg(day.min().alias("start"), day.max().alias("end"))
        .with_columns(pl.when(pl.col("end") < last_day).then(pl.col("end")).alias("end"))
    )


def industries(store: Store, as_of: datetime | str | None = None) -> pl.DataFrame:
    """The industry classifications known at ``as_of``: instrument, industry, valid_from,
    valid_to (null while current), one row per classification, sorted. Rows with no
    industry are left out; an instrument reclassified has one row per spell."""
    lf = store.scan("instruments", as_of=as_of)
    schema = {"instrument": pl.String, "industry": pl.String, "valid_from": pl.Date,
              "valid_to": pl.Date}  # fmt: skip
    if lf is None:
        return pl.DataFrame(schema=schema)
    return (
        lf.filter(pl.col("industry").is_not_null())
        .select(list(schema))
        .collect()
        .sort("instrument", "valid_from")
    )


def _fundamentals_daily(
    store: Store, fields: Sequence[str], as_of: datetime | None, intraday: bool = False
) -> pl.DataFrame:
    """Each fundamental's value as a step function of date, visible from its knowledge_date.

    A knowledge_date has no time of day: a figure published on D after the close is known
    to D's daily bar (traded from D + 1 on), but not to D's intraday bars. For intraday bars
    (``intraday``) a figure is therefore visible from the day after its knowledge_date.

    On a date the value is that of the latest period_end published so far (the newest
    restatement of it); a restatement of an older period does not displace a newer period.
    Returns field, instrument, knowledge_date, value: one step per row, sorted by those.
    """
    lf = store.scan("fundamentals", as_of=as_of)
    schema = {"field": pl.String, "instrument": pl.String, "knowledge_date": pl.Date}
    if lf is None:
        return pl.DataFrame(schema={**schema, "value": pl.Float64})
    lf = lf.filter(pl.col("field").is_in(list(fields)))
    if intraday:
        lf = lf.with_columns(pl.col("knowledge_date") + pl.duration(days=1))
    if as_of is not None:
        lf = lf.filter(pl.col("knowledge_date") <= as_of.date())
    ordered = lf.select("instrument", "field", "period_end", "knowledge_date", "value").sort(
        "field", "instrument", "knowledge_date", "period_end"
    )
    effective = ordered.filter(
        pl.col("period_end") >= pl.col("period_end").cum_max().over("field", "instrument")
    )
    # Several rows published the same day: the one of the newest period wins.
    return (
        effective.group_by("field", "instrument", "knowledge_date")
        .agg(pl.col("value").sort_by("period_end").last())
        .sort("field", "instrument", "knowledge_date")
        .collect()
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

    Fields are bar columns (open, high, low, close, volume, vwap, factor), fundamental
    fields, which carry their latest published value forward, or text fields from the
    stories known (``news_count``, ``news_sent``, ``text_decay_vader_hl10``; see
    ``_text_fields``), each story counting from the first bar that decides after its
    delivery. With ``adjust="adjusted"`` prices are multiplied and volume divided by the
    cumulative factor of the actions up to each date (``factor`` then returns that factor).
    With ``universe`` only rows on dates the instrument was a member are kept; the built-in
    universe ``all`` is every instrument of the store, delisted ones included on the dates
    they traded. Sorted by instrument, then date.

    Examples
    --------
    >>> read_bars(store, ["close"], start="2020-01-01", as_of="2020-06-30")  # doctest: +SKIP
    """
    fields = list(dict.fromkeys(fields))
    if adjust not in ("raw", "adjusted"):
        raise UsageError(f"adjust must be raw or adjusted, not {adjust!r}")
    when = to_utc(as_of)
    start_d, end_d = (
        v if v is None or isinstance(v, date) else parse_bound(v, what)
        for v, what in ((start, "start"), (end, "end"))
    )
    dt = store.table("bars")
    if dt is None:
        store.require()
        return _empty(fields, pl.Date())
    intraday = store.spec("bars", dt).intraday
    bar_fields = [f for f in fields if f in BAR_FIELDS]
    text = [f for f in fields if f not in BAR_FIELDS and is_text_field(f)]
    other = [f for f in fields if f not in BAR_FIELDS and f not in text]
    check_text_fields(text)
    if text and start_d is not None:
        # A story counts at the first bar after it: the bars before start decide which.
        kept, start_d = start_d, None
    else:
        kept = None
    if other:
        # Fields are checked against all that was ever stored: a field not yet known at
        # as_of is a column of empty values, not an error.
        known = fundamental_fields(store)
        for f in other:
            if f not in known:
                valid = [*BAR_FIELDS, *known]
                texts = text_field_examples() if store.table("events") is not None else []
                close = difflib.get_close_matches(f, [*valid, *texts], n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                stories = (
                    "; text fields: KIND_STAT[_SCORER][_hlN], e.g. news_count, news_sent, "
                    "text_decay_vader_hl10"
                    if texts
                    else ""
                )
                raise UsageError(f"unknown field {f!r}{hint} (fields: {', '.join(valid)}{stories})")

    # A bar dated (intraday: timed) after as_of cannot have been known then.
    ends = [key_bound(end_d, intraday, True), key_bound(when, intraday, True)]
    last = min((e for e in ends if e is not None), default=None)
    need = set(bar_fields)
    factors: Future[pl.DataFrame] | None = None
    if adjust == "adjusted":
        need.add("factor")
        # The factors read the store on their own (dividends need raw closes): done in a
        # second thread while this one reads the bars, as Polars releases the GIL (at 16,000
        # instruments both take about 1.5 s).
        factors = _pool().submit(adjustment_factors, store, when)
    df = read_latest(
        store,
        BARS,
        [f for f in BAR_FIELDS if f in need],
        pl.col("instrument").is_in(list(instruments)) if instruments is not None else None,
        when,
        between=(start_d, last) if (start_d or last) else None,
    )
    if text:
        # Before the universe's filter: a story on a day out of the index counts on that
        # day's bar, not on the next day the instrument is a member.
        df = df.with_columns(**text_columns(store, df, text, when))
        if kept is not None:
            df = df.filter(pl.col("date") >= key_bound(kept, intraday, False))
    # The built-in universe "all" is every bar known: no row is outside it.
    if universe is not None and universe != ALL:
        df = df.filter(_membership(df, members(store, universe, when)))
    if factors is not None:
        df = apply_adjustment(df, factors.result())
    if other:
        # Each field is its own step function: fields published on different days must
        # not blank each other out.
        daily = _fundamentals_daily(store, other, when, intraday).partition_by(
            "field", as_dict=True
        )
        empty = pl.DataFrame(
            schema={"instrument": pl.String, "knowledge_date": pl.Date, "value": pl.Float64}
        )
        df = df.with_columns(
            pl.Series(
                f,
                last_known(df, daily.get((f,), empty), "date", "knowledge_date", ["value"]).values[
                    "value"
                ],
            ).fill_nan(None)
            for f in other
        )
    return df.select("instrument", "date", *fields)


@functools.cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="quarry-read")


def apply_adjustment(df: pl.DataFrame, factors: pl.DataFrame) -> pl.DataFrame:
    """Apply cumulative factors: prices times factor, volume divided by it.

    Instruments with known corporate actions use the factor they imply; others keep the
    vendor's factor column, or 1 when the vendor gave none.
    """
    if factors.height:
        found = last_known(df, factors, "date", "ex_date", ["cum_factor"])
        # Before an instrument's first ex-date its factor is 1; instruments without actions
        # keep the vendor's factor. (Series, not numpy: nan_to_num over 40M rows took 1.6 s.)
        implied = pl.Series("cum_factor", found.values["cum_factor"]).fill_nan(1.0)
        df = df.with_columns(
            pl.when(pl.Series("covered", found.covered))
            .then(implied)
            .otherwise(pl.col("factor"))
            .alias("factor")
        )
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
