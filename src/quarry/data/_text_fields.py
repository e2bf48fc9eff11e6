"""Text events as fields of bars, point in time: ``$news_count``, ``$news_sent``, ...

A story counts for the first bar of its instrument whose decision time is at or after the
story's knowledge time (its delivery): a daily bar decides at the close (16:00 in New York),
so a story delivered after the close counts for the next trading day, and one delivered
late counts from its delivery, not its publication. At that bar it counts with the version
known then; a later correction or retraction does not rewrite what that bar knew, and moves
a decayed sum only from the bar it is known at. A story about several instruments counts for
each of them.

Field names: ``{kind}_{stat}[_{scorer}][_hl{N}]``

- kind: ``news``, ``filing``, ``report``, ``social``, or ``text`` for every kind;
- stat: ``count`` (stories that count at the bar, 0 when none), ``sum`` (the sum of their
  scores, 0 when none), ``sent`` (their mean score, empty when none), ``decay`` (every story
  known so far, each score halved every N bars since the bar it counted for, N = 5 unless
  ``_hlN`` says; a retracted story leaves the sum from the bar its retraction is known at);
- scorer: a registered scorer (``lm``, Loughran-McDonald's finance words, the default;
  ``vader``) or one whose scores ``quarry data score`` wrote (``embed``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl

from quarry._memory import small_pages
from quarry.data._events import event_versions
from quarry.data._schemas import EVENT_KINDS
from quarry.data._store import Store
from quarry.exceptions import UsageError

__all__ = [
    "DEFAULT_SCORER",
    "TextField",
    "check_text_fields",
    "decision_times",
    "is_text_field",
    "story_bars",
    "text_columns",
    "text_field_examples",
]

DEFAULT_SCORER = "lm"
DEFAULT_HALF_LIFE = 5
ALL_KINDS = "text"
STATS = ("count", "sent", "sum", "decay")
# A daily bar's decision time: the close of the market it trades on.
MARKET_CLOSE = "16h"
MARKET_ZONE = "America/New_York"
_NAME = re.compile(
    rf"^(?P<kind>{'|'.join((*EVENT_KINDS, ALL_KINDS))})_(?P<stat>{'|'.join(STATS)})"
    r"(?:_(?!hl\d+$)(?P<scorer>[a-z][a-z0-9]*?))?(?:_hl(?P<hl>\d+))?$"
)


@dataclass(frozen=True)
class TextField:
    """One text field, parsed from its name."""

    name: str
    kind: str
    stat: str
    scorer: str | None
    half_life: int

    @classmethod
    def parse(cls, name: str) -> TextField:
        m = _NAME.match(name)
        if m is None:
            raise UsageError(f"{name!r} is not a text field (kind_stat[_scorer][_hlN])")
        stat = m["stat"]
        scorer = m["scorer"]
        if stat == "count" and scorer is not None:
            raise UsageError(f"field {name!r}: a count reads no score; write {m['kind']}_count")
        if m["hl"] is not None and stat != "decay":
            raise UsageError(f"field {name!r}: a half-life (_hlN) applies to decay fields only")
        half_life = int(m["hl"]) if m["hl"] is not None else DEFAULT_HALF_LIFE
        if half_life < 1:
            raise UsageError(f"field {name!r}: the half-life is a number of bars, at least 1")
        if stat != "count" and scorer is None:
            scorer = DEFAULT_SCORER
        return cls(name, m["kind"], stat, scorer, half_life)


def is_text_field(name: str) -> bool:
    """Whether ``name`` reads the events table (``news_count``, ``text_sent_vader``, ...)."""
    return _NAME.match(name) is not None


def text_field_examples() -> list[str]:
    """Every kind and stat with the default scorer: what an unknown field is matched to."""
    kinds = (*EVENT_KINDS, ALL_KINDS)
    return [f"{k}_{s}" for k in kinds for s in STATS]


def decision_times(dates: pl.Series) -> pl.Series:
    """When each bar decides, in UTC: a daily bar at the market's close on its day, an
    intraday bar at its own time."""
    if isinstance(dates.dtype, pl.Datetime):
        zone = dates.dtype.time_zone
        return (
            dates.dt.replace_time_zone("UTC") if zone is None else dates.dt.convert_time_zone("UTC")
        )
    return (
        dates.cast(pl.Datetime("us"))
        .dt.offset_by(MARKET_CLOSE)
        .dt.replace_time_zone(MARKET_ZONE)
        .dt.convert_time_zone("UTC")
    )


def text_columns(
    store: Store, bars: pl.DataFrame, names: Sequence[str], as_of: datetime | None
) -> dict[str, pl.Series]:
    """The text fields ``names`` on every row of ``bars`` (instrument, date; sorted by
    instrument, then date), from the stories known at ``as_of``."""
    fields = [TextField.parse(n) for n in names]
    if store.table("events") is None:
        raise UsageError(
            f"{store.location}: fields {', '.join(names)} read stories, and the store has none; "
            "ingest some with `quarry data ingest events FILE`"
        )
    with small_pages():  # arrays of every bar: huge-page advice stalls each on its faults
        return _text_columns(store, bars, fields, as_of)


def _text_columns(
    store: Store, bars: pl.DataFrame, fields: list[TextField], as_of: datetime | None
) -> dict[str, pl.Series]:
    rows = _bar_keys(bars)
    versions = _about(event_versions(store, as_of), rows.instruments)
    scorers = sorted({f.scorer for f in fields if f.scorer is not None})
    if scorers:
        from quarry.data._event_scores import score_versions

        versions = versions.with_columns(
            score_versions(store, versions, s, as_of).alias(f"score_{s}") for s in scorers
        )
    # Stories are placed at bars once per kind; every field of that kind reads the result.
    placed = {k: _pairs(versions, k, rows) for k in dict.fromkeys(f.kind for f in fields)}
    out: dict[str, pl.Series] = {}
    for f in fields:
        values = _aggregate(placed[f.kind], rows, f)
        # No story, no mean: empty (null), as every missing value of a read.
        out[f.name] = pl.Series(f.name, values).fill_nan(None)
    return out


def _about(versions: pl.DataFrame, instruments: pl.Series) -> pl.DataFrame:
    """The versions of the stories that ever named one of ``instruments`` (the others are
    neither scored nor placed: a read of a few instruments scores their stories only)."""
    named = (
        versions.select("event_id", pl.col("instruments").str.split(",").alias("instrument"))
        .explode("instrument")
        .filter(pl.col("instrument").is_in(instruments.implode()))
    )
    return versions.filter(pl.col("event_id").is_in(named["event_id"].unique().implode()))


@dataclass(frozen=True)
class _Bars:
    """The bars' rows on one sorted integer line per instrument, for a binary search."""

    keys: np.ndarray  # instrument code << 40 | seconds since ``origin`` of the decision time
    instruments: pl.Series  # sorted, unique
    codes: np.ndarray  # per row
    origin: int  # seconds
    calendar: np.ndarray  # per row: the index of its date among all dates of the bars


_SHIFT = 40  # seconds fit below bit 40 for 34,000 years


def _bar_keys(bars: pl.DataFrame) -> _Bars:
    # The bars are sorted by instrument: its code is the number of its run of rows.
    name = bars["instrument"]
    codes = name.rle_id().to_numpy().astype(np.int64)
    instruments = name.unique(maintain_order=True)
    if not instruments.is_sorted():
        raise ValueError("text fields need bars sorted by instrument, then date")
    # Decision times per distinct date (a few thousand), not per bar (tens of millions).
    days = bars["date"].unique().sort()
    calendar = np.searchsorted(days.to_physical().to_numpy(), bars["date"].to_physical().to_numpy())
    # Decision times fall on whole seconds; a story at 16:00:00.5 counts for the next bar.
    day_secs = decision_times(days).dt.epoch("s").to_numpy().astype(np.int64)
    origin = int(day_secs.min()) if day_secs.size else 0
    keys = (day_secs - origin + (1 << 39))[calendar]
    keys |= codes << _SHIFT  # in place: each array of every bar costs its page faults
    return _Bars(keys, instruments, codes, origin, calendar)


def story_bars(versions: pl.DataFrame, bars: pl.DataFrame) -> pl.DataFrame:
    """Where each story version lands among ``bars`` (instrument, date; sorted): one row per
    version and instrument it names, with ``row``, the index of the first bar of that
    instrument deciding at or after the version's delivery, and ``first``, whether that is
    the bar the story first counts for (the version a model of stories trains on)."""
    rows = _bar_keys(bars)
    placed = _placed(versions, ALL_KINDS, rows)
    # What a bar sees is the newest version known there: the story's first bar is the first
    # where that version stands, and that version is the one its bar read.
    newest = pl.col("delivered_at") == pl.col("delivered_at").max().over("__pair", "row")
    first = pl.col("row").filter(pl.col("active") & newest).min().over("__pair")
    return placed.with_columns(((pl.col("row") == first) & newest).alias("first")).filter(
        pl.col("active")
    )


def _pairs(versions: pl.DataFrame, kind: str, bars: _Bars) -> pl.DataFrame:
    """Every (story, instrument) pair's versions at the bars they are known at: row (the bar
    row), active (the story stands and names the instrument) and score; from the first bar
    the pair is active at on. Sorted by pair, then row."""
    pv = _placed(versions, kind, bars)
    # Of the versions known at one bar, the newest is what the bar sees.
    seen = (
        pv.select("__pair", "row", "delivered_at", "active", pl.col("^score_.*$"))
        .sort("__pair", "row", "delivered_at")
        .group_by(["__pair", "row"], maintain_order=True)
        .agg(pl.col("active").last(), pl.col("^score_.*$").last())
    )
    first = pl.col("row").filter(pl.col("active")).min().over("__pair")
    kept = seen.filter(pl.col("row") >= first)
    # Rows are in pair order: a pair's first row is where its story counts.
    starts = pl.col("__pair") != pl.col("__pair").shift(1)
    kept = kept.with_columns(starts.fill_null(True).alias("__start"))
    return kept.with_columns(pl.when("__start").then(pl.col("row")).forward_fill().alias("__b0"))


def _placed(versions: pl.DataFrame, kind: str, bars: _Bars) -> pl.DataFrame:
    """Every version of each story of ``kind`` per instrument it ever named, with ``row``,
    the bar it is known at (none after the last bar), and ``active``: the version stands and
    names the instrument."""
    # A story's number is its id's rank: the same numbers in every read, in any row order
    # (so sums run in the same order).
    story = pl.col("event_id").rank("dense")
    v = versions.with_columns(
        pl.col("instruments").str.split(",").alias("__codes"), story.alias("__story")
    )
    # A story's kind is its first version's (a retraction carries none).
    kinds = (
        v.filter(~pl.col("retracted"))
        .group_by("event_id")
        .agg(pl.col("kind").sort_by("delivered_at").first().alias("__kind"))
    )
    if kind != ALL_KINDS:
        kinds = kinds.filter(pl.col("__kind") == kind)
    v = v.join(kinds.select("event_id"), on="event_id", how="semi")
    named = (
        v.select("event_id", pl.col("__codes").alias("instrument"))
        .explode("instrument")
        .drop_nulls()
        .unique()
        .filter(pl.col("instrument").is_in(bars.instruments.implode()))
    )
    pv = v.join(named, on="event_id").with_columns(
        (~pl.col("retracted") & pl.col("__codes").list.contains(pl.col("instrument"))).alias(
            "active"
        )
    )
    code = bars.instruments.search_sorted(pv["instrument"]).to_numpy().astype(np.int64)
    if code.size and code.max() >= 1 << 24:
        raise UsageError("text fields read at most 16,777,216 instruments at once")
    # Up to the next whole second: known at 16:00:00.5 is after a 16:00:00 decision.
    known = (
        (pv["delivered_at"].dt.epoch("us").to_numpy() + 999_999) // 1_000_000
        - bars.origin
        + (1 << 39)
    )
    known = np.clip(known, 0, (1 << 40) - 1)
    at = np.searchsorted(bars.keys, (code << _SHIFT) | known, side="left")
    inside = at < bars.keys.size
    inside[inside] = bars.codes[at[inside]] == code[inside]
    # One integer per (story, instrument): grouping and sorting by it beats two strings.
    number = pv["__story"].to_numpy().astype(np.int64)
    pv = pv.with_columns(
        pl.Series("row", np.where(inside, at, -1)), pl.Series("__pair", (number << 24) | code)
    )
    return pv.filter(pl.col("row") >= 0).drop("__codes")


def _aggregate(pairs: pl.DataFrame, bars: _Bars, field: TextField) -> np.ndarray:
    n = bars.keys.size
    firsts = pairs.filter(pl.col("__start"))
    if field.stat in ("count", "sum", "sent"):
        at = firsts["row"].to_numpy()
        # float64 at once (astype copies nothing then; with no story bincount gives ints)
        count = np.bincount(at, weights=np.ones(at.size), minlength=n).astype(
            np.float64, copy=False
        )
        if field.stat == "count":
            return count
        raw = firsts[f"score_{field.scorer}"].fill_nan(None)
        total = np.bincount(at, weights=raw.fill_null(0.0).to_numpy(), minlength=n).astype(
            np.float64, copy=False
        )
        if field.stat == "sum":
            return total
        # The mean of the stories with a score: a trained head has none for the stories
        # before its first window, which are no evidence of a neutral tone.
        scored = np.bincount(at, weights=raw.is_not_null().cast(pl.Float64).to_numpy(),
                             minlength=n).astype(np.float64, copy=False)  # fmt: skip
        # In place: three arrays of every bar cost more in page faults than in arithmetic.
        scored[scored == 0] = np.nan
        np.divide(total, scored, out=total)
        return total
    # decay: each change of a pair's standing score, discounted from the bar it counted for
    lam = 0.5 ** (1.0 / field.half_life)
    value = (
        pl.when(pl.col("active"))
        .then(pl.col(f"score_{field.scorer}").fill_null(0.0).fill_nan(0.0))
        .otherwise(0.0)
    )
    before = pl.when(pl.col("__start")).then(0.0).otherwise(pl.col("__v").shift(1))
    changes = pairs.with_columns(value.alias("__v")).with_columns(
        (pl.col("__v") - before).alias("__d")
    )
    rows = changes["row"].to_numpy()
    age = bars.calendar[rows] - bars.calendar[changes["__b0"].to_numpy()]
    inc = np.bincount(rows, weights=changes["__d"].to_numpy() * lam**age, minlength=n).astype(
        np.float64, copy=False
    )
    decayed: np.ndarray = _decay_kernel()(inc, bars.codes, bars.calendar, lam)
    # A retraction subtracts what its story added: leave no rounding residue behind.
    decayed[np.abs(decayed) < 1e-12] = 0.0
    return decayed


@functools.cache
def _decay_kernel() -> Any:
    from quarry._jit import njit

    @njit(cache=False)
    def run(inc: np.ndarray, codes: np.ndarray, calendar: np.ndarray, lam: float) -> np.ndarray:
        out = np.empty_like(inc)
        for r in range(inc.size):
            if r > 0 and codes[r] == codes[r - 1]:
                out[r] = out[r - 1] * lam ** (calendar[r] - calendar[r - 1]) + inc[r]
            else:
                out[r] = inc[r]
        return out

    return run


def check_text_fields(names: Sequence[str]) -> None:
    """Parse every text field name (``UsageError`` for a malformed one)."""
    for n in names:
        TextField.parse(n)
