"""A realistic, seeded synthetic market, written to a store through the same commit path as
vendor files.

What it models: a market factor and industry factors with fat-tailed (Student-t) returns;
instruments that list and delist during the period; splits and cash dividends (raw prices
jump, a vendor factor column and a corporate-actions table record them); persistent,
return-sensitive volumes; quarterly fundamentals published 25-70 days after the quarter ends;
vendor corrections and restatements; an index universe reviewed each quarter; and optionally a
planted alpha.

Every fact carries the time it became known, so that reads as of a date inside the history
show what was known then: a bar after its day's close, a fundamental on its publication
date, a corporate action when it was declared (two weeks before its ex-date), a listing,
reclassification or delisting when it happened, the index's membership at each review, and a
vendor correction days after the value it corrects. The history is written as one commit per
table with a knowledge time per row (corrections in a second commit), which reads resolve as
fast as one bulk commit.

The planted alpha is a 5-day reversal: the signal on day t is the cross-sectional z-score of
minus the instrument's 5-day log return, and the idiosyncratic return from close t+1 to
close t+2 (what Qlib's default label ``Ref($close, -2) / Ref($close, -1) - 1`` measures) has
correlation ``alpha_ic`` with it.

Optionally, text events: ``text_rate`` stories per instrument and trading day (headlines with
a tone, some after the close, a few delivered late, corrected or retracted; see
``_synthetic_text``), whose tone leads the same label by ``text_ic`` (see ``_returns``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np
import polars as pl

from quarry.data._schemas import KT, KT_DTYPE, table_spec
from quarry.data._store import Store
from quarry.data._synthetic_text import TextEvents, draw_events
from quarry.exceptions import UsageError

__all__ = ["GenerateSummary", "generate"]

INDUSTRIES = (
    "Energy", "Materials", "Industrials", "ConsumerDiscretionary", "ConsumerStaples",
    "HealthCare", "Financials", "InformationTechnology", "CommunicationServices",
    "Utilities", "RealEstate",
)  # fmt: skip
_EXCHANGES = ("XNYS", "XNAS", "XASE")
# Daily log moves are capped (as by exchange circuit breakers), so that the fat tails stay
# below the health check's 50% jump threshold.
_MAX_MOVE = 0.3
_CHUNK = 1000  # instruments per batch when building bars: bounds memory at 16,000 x 2,520
# A day's bar is known after its close (16:00 in New York is 20:00 or 21:00 UTC).
_AFTER_CLOSE = timedelta(hours=21)
# Corporate actions are declared this many trading days before their ex-date.
_DECLARED = 10
# The index universe: the larger half of the listed instruments by market value.
INDEX = "large"

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GenerateSummary:
    """What ``generate`` wrote."""

    instruments: int
    days: int
    start: date
    end: date
    bars: int
    listed_during: int
    delisted: int
    splits: int
    dividends: int
    fundamentals: int
    bar_corrections: int
    # Text events (0 when text_rate is 0): stories as first delivered, and later versions.
    stories: int
    story_corrections: int
    story_retractions: int
    alpha_ic: float
    text_ic: float
    # The history as first delivered is known by this time (the day after its last date);
    # vendor corrections of it arrive up to two weeks later.
    knowledge_time: datetime


def _trading_days(start: date, days: int) -> np.ndarray:
    first = np.busday_offset(np.datetime64(start, "D"), 0, roll="forward")
    return np.asarray(
        np.busday_offset(first, np.arange(days), roll="forward"), dtype="datetime64[D]"
    )


def _t(rng: np.random.Generator, df: float, size: tuple[int, ...]) -> np.ndarray:
    """Student-t draws scaled to unit variance."""
    draws: np.ndarray = rng.standard_t(df, size=size) * np.sqrt((df - 2) / df)
    return draws


def _returns(
    rng: np.random.Generator,
    n: int,
    d: int,
    industry: np.ndarray,
    alive: np.ndarray,
    ic: float,
    text: TextEvents | None = None,
    text_ic: float = 0.0,
) -> np.ndarray:
    """Daily log returns, days x instruments, with the planted reversal alpha if ``ic`` and
    the planted effect of the stories' tone if ``text_ic``.

    The tone's effect: the standardised net tone ``z`` of the stories counting at bar b moves
    the idiosyncratic return from close b+1 to close b+2 by ``text_ic * z`` (in units of the
    instrument's volatility). Where it does, the noise is scaled by sqrt(1 - text_ic^2), so
    that the variance of a story's instrument on that day is what it would have been (``z``
    has unit variance across the instruments it is set for) and the correlation is text_ic.
    With the reversal alpha too, that noise is scaled by both: the variance grows by
    (ic * text_ic)^2, negligible at the sizes allowed.
    """
    market = _t(rng, 4, (d,)) * 0.010
    ind_f = _t(rng, 4, (d, len(INDUSTRIES))) * 0.006
    beta = rng.uniform(0.6, 1.4, n)
    vol = np.exp(rng.normal(np.log(0.017), 0.35, n))
    eps = _t(rng, 4, (d, n))
    common = market[:, None] * beta[None, :] + ind_f[:, industry]
    lead = None
    if text is not None and text_ic != 0.0:
        lead = np.zeros((d, n))
        lead[2:] = text_ic * text.z[:-2]
        eps[2:][text.hit[:-2]] *= np.sqrt(1.0 - text_ic * text_ic)
    if ic == 0.0:
        idio = eps if lead is None else eps + lead
        clipped: np.ndarray = np.clip(common + idio * vol, -_MAX_MOVE, _MAX_MOVE)
        return clipped
    r = np.empty((d, n))
    logp = np.zeros((d, n))
    signal = np.zeros((d, n))
    keep = np.sqrt(1.0 - ic * ic)
    for t in range(d):
        planted = signal[t - 2] if t >= 2 else 0.0
        idio = ic * planted + keep * eps[t]
        if lead is not None:
            idio = idio + lead[t]
        r[t] = np.clip(common[t] + vol * idio, -_MAX_MOVE, _MAX_MOVE)
        logp[t] = (logp[t - 1] if t else 0.0) + r[t]
        if t >= 5:
            s = -(logp[t] - logp[t - 5])
            ok = alive[t] & alive[t - 5]
            if ok.sum() > 2:
                z = (s - s[ok].mean()) / (s[ok].std() + 1e-12)
                signal[t] = np.where(ok, z, 0.0)
    return r


def generate(
    store: Store,
    instruments: int = 500,
    days: int = 1260,
    *,
    seed: int = 0,
    start: date | str = date(2015, 1, 2),
    alpha_ic: float = 0.0,
    text_rate: float = 0.0,
    text_ic: float = 0.0,
    progress: Progress | None = None,
) -> GenerateSummary:
    """Generate a synthetic market into an empty store.

    Each row is known from when it would have been (see the module's docstring): a read as
    of a date inside the history sees the bars up to that date's close, the fundamentals
    published by then, the index members of the last review and values before the vendor
    corrected them. Universes: the built-in ``all`` and ``large`` (the larger half by market
    value, reviewed at each quarter end).

    ``text_rate`` > 0 adds an ``events`` table: that many stories per instrument and trading
    day on average, each known from its delivery (some after the close, a few late, corrected
    or retracted), whose tone has correlation ``text_ic`` with the idiosyncratic return from
    close b+1 to close b+2, b the first bar whose close (16:00 New York) is at or after the
    story's delivery. Text draws from its own random stream: with ``text_ic`` 0 the prices
    of a seed are the same with or without text.
    """
    if instruments < 2 or days < 30:
        raise UsageError("generate needs at least 2 instruments and 30 days")
    if not -0.5 <= alpha_ic <= 0.5:
        raise UsageError(
            f"alpha_ic {alpha_ic} is not a small predictive power: keep it in [-0.5, 0.5]"
        )
    if not -0.5 <= text_ic <= 0.5:
        raise UsageError(
            f"text_ic {text_ic} is not a small predictive power: keep it in [-0.5, 0.5]"
        )
    if not 0.0 <= text_rate <= 20.0:
        raise UsageError(
            f"text_rate {text_rate} is not a number of stories per instrument and day in [0, 20]"
        )
    if text_ic and not text_rate:
        raise UsageError(f"text_ic {text_ic} plants nothing without stories: give text_rate > 0")
    if isinstance(start, str):
        try:
            start = date.fromisoformat(start)
        except ValueError:
            raise UsageError(f"--start: cannot parse date {start!r}; use YYYY-MM-DD") from None
    if not date(1900, 1, 1) <= start <= date(2200, 1, 1):
        raise UsageError(f"--start {start} is out of range: give a date between 1900 and 2200")
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, not {seed}")
    if store.exists():
        raise UsageError(f"{store.location} already holds data; generate into a new, empty store")
    step = progress or (lambda _d, _i, _n: None)
    rng = np.random.default_rng(seed)
    n, d = instruments, days
    dates = _trading_days(start, d)
    names = [f"SYN{i:05d}" for i in range(n)]

    # Lifetimes: most instruments predate the period; some list or delist inside it.
    list_idx = np.zeros(n, dtype=np.int64)
    late = rng.random(n) < 0.2
    late[1] = True  # at least one listing and one delisting, whatever the seed
    list_idx[late] = rng.integers(1, max(2, d - 60), late.sum())
    delist_idx = np.full(n, d - 1, dtype=np.int64)
    gone = (rng.random(n) < 0.12) & (list_idx + 60 < d - 1)
    gone[0] = d > 80
    delist_idx[gone] = [rng.integers(li + 40, d - 1) for li in list_idx[gone]]
    alive = (np.arange(d)[:, None] >= list_idx[None, :]) & (
        np.arange(d)[:, None] <= delist_idx[None, :]
    )
    industry = rng.integers(0, len(INDUSTRIES), n)

    kt = datetime.combine(dates[-1].item() + timedelta(days=1), datetime.min.time(), UTC)
    text = None
    if text_rate > 0:
        # Text draws from its own stream, so that a seed's prices do not depend on it.
        step("stories", 0, 1)
        text = draw_events(np.random.default_rng([seed, 2]), text_rate, names, dates, alive, kt)
        step("stories", 1, 1)

    step("returns", 0, 1)
    r = _returns(rng, n, d, industry, alive, alpha_ic, text, text_ic)
    step("returns", 1, 1)

    # Corporate actions as (instrument index, day index, kind, split ratio or dividend yield).
    events: list[tuple[int, int, str, float]] = []
    for i in range(n):
        lo, hi = list_idx[i] + 5, delist_idx[i]
        if hi - lo < 10:
            continue
        for day in rng.choice(
            np.arange(lo, hi), size=min(rng.poisson(0.3 * d / 1260), hi - lo), replace=False
        ):
            events.append((i, int(day), "split", float(rng.choice([2.0, 3.0, 1.5]))))
        if rng.random() < 0.4:
            y = rng.uniform(0.003, 0.008)
            for day in range(lo + int(rng.integers(0, 63)), hi, 63):
                events.append((i, day, "dividend", y))
    ev = (
        pl.DataFrame(
            events,
            schema={"i": pl.Int64, "t": pl.Int64, "kind": pl.String, "x": pl.Float64},
            orient="row",
        )
        .unique(["i", "t"], keep="first")
        .sort("i", "t")
    )
    # Cumulative factor per day: splits by their ratio, dividends by 1 / (1 - yield).
    steps = np.ones((d, n))
    ev_i, ev_t, ev_x = ev["i"].to_numpy(), ev["t"].to_numpy(), ev["x"].to_numpy()
    is_split = (ev["kind"] == "split").to_numpy()
    steps[ev_t, ev_i] = np.where(is_split, ev_x, 1.0 / (1.0 - ev_x))
    factor = np.cumprod(steps, axis=0)

    p0 = np.exp(rng.normal(np.log(40.0), 0.8, n))
    mu_lv = rng.normal(13.0, 1.0, n)
    gap_scale = rng.uniform(0.002, 0.006, n)

    def bars_chunks() -> Iterator[pl.DataFrame]:
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            m = hi - lo
            adj = p0[lo:hi] * np.exp(np.cumsum(r[:, lo:hi], axis=0))
            f = factor[:, lo:hi]
            close = np.round(adj / f, 2)
            prev = np.vstack([close[:1], close[:-1]]) * np.vstack([f[:1], f[:-1]]) / f
            open_ = np.round(prev * np.exp(rng.normal(0, 1, (d, m)) * gap_scale[lo:hi]), 2)
            span = np.abs(rng.normal(0, 1, (d, m))) * 0.006 + 0.001
            high = np.round(np.maximum(open_, close) * (1 + span), 2)
            low = np.round(np.minimum(open_, close) * (1 - span * rng.uniform(0.3, 1.0, (d, m))), 2)
            vwap = np.round(np.clip((open_ + high + low + close) / 4, low, high), 2)
            shock = np.minimum(np.abs(r[:, lo:hi]) * 4, 0.5)
            lv = np.empty((d, m))
            lv[0] = mu_lv[lo:hi]
            innov = rng.normal(0, 0.15, (d, m))
            for t in range(1, d):
                lv[t] = mu_lv[lo:hi] + 0.75 * (lv[t - 1] - mu_lv[lo:hi]) + innov[t]
            volume = np.round(np.exp(lv + shock) * f)  # raw shares rise with splits
            ok = alive[:, lo:hi]
            ti, ii = np.nonzero(ok.T)  # instrument-major: rows sorted by instrument, date
            yield pl.DataFrame(
                {
                    "instrument": np.asarray(names[lo:hi], dtype=object)[ti],
                    "date": dates[ii],
                    "open": open_.T[ok.T],
                    "high": high.T[ok.T],
                    "low": low.T[ok.T],
                    "close": close.T[ok.T],
                    "volume": volume.T[ok.T],
                    "vwap": vwap.T[ok.T],
                    "factor": f.T[ok.T],
                },
                schema_overrides={"instrument": pl.String},
            ).with_columns(_at(pl.col("date"), _AFTER_CLOSE).alias(KT))
            step("bars", hi, n)

    # Corrections arrive up to two weeks after the history's last day.
    kt_fix = kt + timedelta(days=14)
    # Knowledge times and the index draw from their own stream, so that a seed's prices,
    # actions and fundamentals do not depend on them.
    rng_kt = np.random.default_rng([seed, 1])

    # Instruments, with a reclassification for about 5% of them.
    list_dates = [
        dates[li].item()
        if late[i]
        else dates[0].item() - timedelta(days=int(rng.integers(30, 4000)))
        for i, li in enumerate(list_idx)
    ]
    delist_dates = [dates[di].item() if gone[i] else None for i, di in enumerate(delist_idx)]
    inst_rows = []
    for i in range(n):
        base = {
            "instrument": names[i],
            "name": f"Synthetic {INDUSTRIES[industry[i]]} Co {i}",
            "exchange": _EXCHANGES[i % len(_EXCHANGES)],
            "list_date": list_dates[i],
            "delist_date": delist_dates[i],
        }
        if rng.random() < 0.05 and delist_idx[i] - list_idx[i] > 100:
            cut = dates[int(rng.integers(list_idx[i] + 50, delist_idx[i] - 20))].item()
            old = INDUSTRIES[(industry[i] + 1) % len(INDUSTRIES)]
            inst_rows.append(
                {
                    **base,
                    "industry": old,
                    "valid_from": list_dates[i],
                    "valid_to": cut - timedelta(days=1),
                }
            )
            inst_rows.append(
                {**base, "industry": INDUSTRIES[industry[i]], "valid_from": cut, "valid_to": None}
            )
        else:
            inst_rows.append(
                {
                    **base,
                    "industry": INDUSTRIES[industry[i]],
                    "valid_from": list_dates[i],
                    "valid_to": None,
                }
            )
    _commit_instruments(store, pl.DataFrame(inst_rows), kt)
    _commit_index(store, rng_kt, names, dates, alive, p0, r, kt)

    bars_spec = table_spec("bars")
    bars_commit = store.commit(
        bars_spec, bars_chunks(), knowledge_time=kt, base=None, source="generate"
    )

    # Dividend amounts in cash: the yield times the raw close before the ex-date.
    prev_close = np.round(
        p0[ev_i] * np.exp(np.cumsum(r, axis=0)[ev_t - 1, ev_i]) / factor[ev_t - 1, ev_i], 2
    )
    actions = pl.DataFrame(
        {
            "instrument": np.asarray(names, dtype=object)[ev_i],
            "ex_date": dates[ev_t],
            "kind": ev["kind"],
            "ratio": np.where(is_split, ev_x, np.nan),
            "amount": np.where(is_split, np.nan, np.round(ev_x * prev_close, 4)),
            "declared": dates[np.maximum(ev_t - _DECLARED, 0)],
        },
        schema_overrides={"instrument": pl.String},
    ).with_columns(
        pl.col("ratio").fill_nan(None),
        pl.col("amount").fill_nan(None),
        _at(pl.col("declared"), _AFTER_CLOSE).alias(KT),
    )
    if actions.height:
        store.commit(
            table_spec("corporate_actions"),
            actions.drop("declared"),
            knowledge_time=kt,
            base=None,
            source="generate",
        )

    fund = _fundamentals(rng, names, dates, list_idx, delist_idx, p0, r, factor)
    fund_known = fund.filter(pl.col("knowledge_date") < kt.date())
    fund_spec = table_spec("fundamentals")
    published = _at(pl.col("knowledge_date"), timedelta(0)).alias(KT)
    store.commit(
        fund_spec,
        fund_known.with_columns(published),
        knowledge_time=kt,
        base=None,
        source="generate",
    )

    # Vendor corrections, each known 1-10 days after the value it corrects: a few closes
    # fixed, a few fundamentals restated.
    n_fix = max(3, bars_commit.rows // 100_000)
    picks = rng.choice(bars_commit.rows, size=min(n_fix, bars_commit.rows), replace=False)
    original = (
        store.scan("bars", dt=store.table("bars"))
        .with_row_index("_i")  # type: ignore[union-attr]
        .filter(pl.col("_i").is_in(picks))
        .drop("_i")
        .collect()
    )
    move = pl.Series(
        rng.choice([-1.0, 1.0], original.height) * rng.uniform(0.005, 0.02, original.height)
    )
    fixed = (
        original.with_columns((pl.col("close") * (1 + move)).round(2).alias("close"))
        .with_columns(
            pl.max_horizontal("high", "close").alias("high"),
            pl.min_horizontal("low", "close").alias("low"),
        )
        .filter(pl.col("close") != original["close"])
    )
    fixed = fixed.with_columns(_later(rng_kt, fixed.height, 1, 10))
    fix = store.commit(
        bars_spec,
        fixed.select(*bars_spec.names, KT),
        knowledge_time=kt_fix,
        base=store.table("bars"),
        corrections=fixed.height,
        source="generate:corrections",
    )
    # Fundamentals: half of a 1% sample are vendor fixes of the value as published (same
    # key: the truth was this value all along), known days later; half are company
    # restatements, published 90 days later (a new knowledge_date: invisible before then).
    picked = fund_known.sample(fraction=0.01, seed=seed, shuffle=True)
    vendor = picked.gather_every(2)
    restated = (
        picked.gather_every(2, offset=1)
        .with_columns(
            (pl.col("value") * 0.97).round(4),
            pl.col("knowledge_date") + pl.duration(days=90),
        )
        .filter(pl.col("knowledge_date") < kt.date())
        .with_columns(published)
    )
    fixes = pl.concat(
        [
            vendor.with_columns((pl.col("value") * 1.03).round(4), published).with_columns(
                _later(rng_kt, vendor.height, 1, 10)
            ),
            restated,
        ]
    )
    if fixes.height:
        store.commit(
            fund_spec,
            fixes,
            knowledge_time=kt_fix,
            base=store.table("fundamentals"),
            corrections=vendor.height,
            source="generate:corrections",
        )

    if text is not None and text.rows.height:
        # Each version known from its delivery; none delivered after the history's end.
        store.commit(
            table_spec("events"),
            text.rows,
            knowledge_time=kt,
            base=None,
            corrections=text.corrections + text.retractions,
            source="generate",
        )

    return GenerateSummary(
        instruments=n,
        days=d,
        start=dates[0].item(),
        end=dates[-1].item(),
        bars=bars_commit.rows,
        listed_during=int(late.sum()),
        delisted=int(gone.sum()),
        splits=int(is_split.sum()),
        dividends=int((~is_split).sum()),
        fundamentals=fund_known.height,
        bar_corrections=fix.corrections,
        stories=text.stories if text is not None else 0,
        story_corrections=text.corrections if text is not None else 0,
        story_retractions=text.retractions if text is not None else 0,
        alpha_ic=alpha_ic,
        text_ic=text_ic,
        knowledge_time=kt,
    )


def _at(day: pl.Expr, offset: timedelta) -> pl.Expr:
    """A knowledge time: ``offset`` after the start of ``day`` (UTC)."""
    return (day.cast(pl.Datetime("us")) + offset).dt.replace_time_zone("UTC").cast(KT_DTYPE)


def _later(rng: np.random.Generator, size: int, lo: int, hi: int) -> pl.Expr:
    """The row's knowledge time moved ``lo`` to ``hi`` days later (a correction of it)."""
    days = pl.Series(rng.integers(lo, hi + 1, size) * 86_400_000_000, dtype=pl.Int64)
    return (pl.col(KT) + pl.lit(days).cast(pl.Duration("us"))).alias(KT)


def _commit_instruments(store: Store, rows: pl.DataFrame, kt: datetime) -> None:
    """Instruments as known over time: a listing from its list date (without the delisting or
    the end of its first classification, which lie ahead), then each reclassification and
    each delisting from the day it happened, as corrections of the rows they change."""
    spec = table_spec("instruments")
    rows = spec.conform(rows)  # typed even where a column is all empty
    start = pl.col("list_date")
    # What a listing told: no delisting yet, the industry open-ended; a reclassification's
    # own row is known from its first day.
    listed = rows.with_columns(
        pl.lit(None, pl.Date).alias("delist_date"),
        pl.lit(None, pl.Date).alias("valid_to"),
        _at(pl.max_horizontal(start, pl.col("valid_from")), timedelta(0)).alias(KT),
    )
    store.commit(spec, listed, knowledge_time=kt, base=None, source="generate")
    # A row's first classification closed by a reclassification, known on its day.
    reclassified = rows.filter(pl.col("valid_to").is_not_null()).with_columns(
        pl.lit(None, pl.Date).alias("delist_date"),
        _at(pl.col("valid_to") + pl.duration(days=1), timedelta(0)).alias(KT),
    )
    # Every row of a delisted instrument, with its delisting, known after its last close.
    delisted = rows.filter(pl.col("delist_date").is_not_null()).with_columns(
        _at(pl.col("delist_date"), _AFTER_CLOSE).alias(KT)
    )
    for batch in (reclassified, delisted):
        if batch.height:
            store.commit(
                spec,
                batch,
                knowledge_time=kt,
                base=store.table("instruments"),
                corrections=batch.height,
                source="generate",
            )


def _commit_index(
    store: Store,
    rng: np.random.Generator,
    names: list[str],
    dates: np.ndarray,
    alive: np.ndarray,
    p0: np.ndarray,
    r: np.ndarray,
    kt: datetime,
) -> None:
    """The ``large`` universe: at the first day and at each quarter's last trading day, the
    larger half of the listed instruments by market value become the members from the next
    trading day. Each review's membership (every span so far) is a snapshot known after that
    day's close; a delisted member's span ends on its last day from the next review on."""
    d, n = alive.shape
    month = dates.astype("datetime64[M]")
    quarter_end = (month[:-1] != month[1:]) & np.isin(
        (month[:-1].astype(np.int64) % 12) + 1, (3, 6, 9, 12)
    )
    reviews = sorted({0, *(int(t) for t in np.flatnonzero(quarter_end))})
    log_shares = np.asarray(rng.normal(np.log(1e8), 1.0, n))
    # Log market value at each review's close: the adjusted price (raw price times factor:
    # a split changes neither) times a share count; the first review uses the opening price.
    ends = [t + 1 for t in reviews[1:]]
    sums = np.add.reduceat(r[: ends[-1]], [0, *ends[:-1]], axis=0) if ends else r[:0]
    value: np.ndarray = np.log(p0)[None, :] + np.vstack([np.zeros((1, n)), np.cumsum(sums, axis=0)])
    value = value + log_shares[None, :]
    open_from = np.full(n, -1, dtype=np.int64)  # first day of each open span, or -1
    closed: list[tuple[int, int, int]] = []  # (instrument, first day, last day)
    snapshots = []
    for k, t in enumerate(reviews):
        ended = (open_from >= 0) & ~alive[t]
        for i in np.flatnonzero(ended):
            last = int(np.flatnonzero(alive[:, i])[-1])
            closed.append((int(i), int(open_from[i]), last))
            open_from[i] = -1
        listed = np.flatnonzero(alive[t])
        top = listed[np.argsort(-value[k, listed])][: len(listed) // 2]
        member = np.zeros(n, dtype=bool)
        member[top] = True
        effective = t + 1 if k else 0
        if effective >= d:
            break
        for i in np.flatnonzero((open_from >= 0) & ~member):
            closed.append((int(i), int(open_from[i]), t))
            open_from[i] = -1
        open_from[member & (open_from < 0)] = effective
        live = np.flatnonzero(open_from >= 0)
        spans = closed + [(int(i), int(open_from[i]), -1) for i in live]
        idx = np.array(spans, dtype=np.int64).reshape(-1, 3)
        snapshots.append(
            pl.DataFrame(
                {
                    "instrument": np.asarray(names, dtype=object)[idx[:, 0]],
                    "start": dates[idx[:, 1]],
                    "end": dates[np.maximum(idx[:, 2], 0)],
                    "open": idx[:, 2] < 0,
                },
                schema_overrides={"instrument": pl.String},
            ).with_columns(
                pl.when(~pl.col("open")).then(pl.col("end")).alias("end"),
                pl.lit(INDEX).alias("universe"),
                # The first membership is known before the first open, the others after
                # their review's close.
                _at(pl.lit(dates[t]), _AFTER_CLOSE if k else timedelta(0)).alias(KT),
            )
        )
    store.commit(
        table_spec("universe"),
        pl.concat(snapshots),
        knowledge_time=kt,
        base=None,
        source="generate",
    )


def _fundamentals(
    rng: np.random.Generator,
    names: list[str],
    dates: np.ndarray,
    list_idx: np.ndarray,
    delist_idx: np.ndarray,
    p0: np.ndarray,
    r: np.ndarray,
    factor: np.ndarray,
) -> pl.DataFrame:
    """Quarterly eps, book value per share and revenue, published 25-70 days after quarter end."""
    first, last = dates[0].item(), dates[-1].item()
    quarter_ends = [
        date(y, m, 31 if m in (3, 12) else 30)
        for y in range(first.year, last.year + 1)
        for m in (3, 6, 9, 12)
        if first <= date(y, m, 31 if m in (3, 12) else 30) <= last
    ]
    if not quarter_ends:
        return pl.DataFrame(schema=dict(table_spec("fundamentals").schema()))
    q_idx = np.searchsorted(dates, np.array(quarter_ends, dtype="datetime64[D]"), side="right") - 1
    adj = p0[None, :] * np.exp(np.cumsum(r, axis=0))
    raw_at_q = adj[q_idx] / factor[q_idx]  # quarters x instruments
    n, q = len(names), len(quarter_ends)
    yield_ = rng.uniform(0.005, 0.025, n)
    bp = rng.uniform(0.2, 1.2, n)
    sales = rng.uniform(0.15, 0.8, n)
    lag = rng.integers(25, 71, (q, n))
    alive = (q_idx[:, None] >= list_idx[None, :]) & (q_idx[:, None] <= delist_idx[None, :])
    qi, ii = np.nonzero(alive)
    noise = rng.normal(1.0, 0.1, (3, qi.size))
    px = raw_at_q[qi, ii]
    period = np.array(quarter_ends, dtype="datetime64[D]")[qi]
    known = period + lag[qi, ii].astype("timedelta64[D]")
    frames = [
        pl.DataFrame(
            {
                "instrument": np.asarray(names, dtype=object)[ii],
                "field": field,
                "period_end": period,
                "knowledge_date": known,
                "value": np.round(values, 4),
            },
            schema_overrides={"instrument": pl.String},
        )
        for field, values in (
            ("eps", px * yield_[ii] * noise[0]),
            ("book_value_per_share", px * bp[ii] * noise[1]),
            ("revenue_per_share", px * sales[ii] * noise[2]),
        )
    ]
    return pl.concat(frames)
