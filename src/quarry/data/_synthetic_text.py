"""Synthetic headlines for the synthetic market: stories whose tone leads returns.

A story is a short text event (news mostly, some filings, research reports and social posts)
about one instrument, or about two (about 5%). Its tone is -1, 0 or +1 and its title (which
names the instruments by code) carries that tone in words that both a finance dictionary
(Loughran-McDonald) and a general one (VADER) read the same way; a neutral title has no
sentiment word in either.

Timing follows a vendor feed: a story is published at any time of its day in New York (so
some after the close and overnight) and delivered seconds to minutes later, except about 3%
delivered hours to days late. A story counts from its delivery, never its publication: for
the first bar of its instrument whose decision time (16:00 in New York on the bar's date) is
at or after the delivery. About 2% of stories are corrected and 1% retracted 1-10 days later,
each as a new version (row) of the same event id; the market moved on the first version.

The generator plants the tone's effect on returns through ``planted_tone``: for each bar, the
net tone of the stories counting at it, standardised across the instruments that have any.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from quarry.data._schemas import KT, KT_DTYPE, table_spec

__all__ = [
    "PAIR_TEMPLATES",
    "TEMPLATES",
    "UPDATED",
    "TextEvents",
    "decision_times",
    "draw_events",
    "planted_tone",
]

NEW_YORK = ZoneInfo("America/New_York")
# A daily bar's decision time: its close, 16:00 in New York (20:00 or 21:00 UTC).
_TONES = np.array([-1, 0, 1])
_TONE_P = (0.35, 0.30, 0.35)
_KINDS = ("news", "filing", "report", "social")
_KIND_P = (0.75, 0.10, 0.10, 0.05)
_SOURCES = ("synthwire", "synthfilings", "synthresearch", "synthsocial")
_PAIR = 0.05  # share of stories about two instruments
_LATE = 0.03  # share delivered hours to days after publication
_CORRECTED = 0.02
_RETRACTED = 0.01
_US = 1_000_000  # microseconds per second
_DAY = 86_400

# Appended to a corrected title; neutral in both dictionaries (not "corrected": LM-negative).
UPDATED = " (updated)"
# Titles by tone. Positive ones hold a Loughran-McDonald positive word and no negative one,
# negative ones the reverse, neutral ones neither; VADER scores them the same way
# (tests/data/test_synthetic_text.py checks both).
TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "{name} posts record quarterly gains",
        "{name} beats forecasts as profit margins improve",
        "Strong demand makes {name} more profitable than expected",
        "{name} raises outlook after strong sales",
        "Analysts upgrade {name} on improved margins",
        "{name} achieves key milestone with successful launch",
        "{name} reports stronger than expected earnings",
        "{name} wins major contract as shares gain",
        "{name} lifts dividend after an excellent year",
        "{name} sees rising profitability and robust demand",
        "Investors cheer {name} as efficiency improves",
        "{name} completes successful expansion into Asia",
        "{name} delivers impressive results",
        "{name} shares climb on favorable court decision",
        "{name} gains market share with innovative products",
        "{name} outperforms peers on strong cash flow",
    ),
    0: (
        "{name} to present at industry conference",
        "{name} schedules quarterly earnings call",
        "{name} names new chief financial officer",
        "{name} files annual report",
        "{name} sets date of board meeting",
        "{name} holds annual shareholder meeting",
        "{name} updates investor presentation",
        "{name} declares regular quarterly dividend",
        "{name} appoints director to the board",
        "{name} opens new office in Chicago",
        "{name} moves headquarters to Texas",
        "{name} to release results next week",
        "Trading update from {name}",
        "{name} publishes sustainability report",
        "{name} files proxy statement",
    ),
    -1: (
        "{name} posts unexpected quarterly loss",
        "{name} misses forecasts as sales decline sharply",
        "Analysts downgrade {name} after weak results",
        "{name} cuts outlook on weak demand",
        "{name} faces fraud investigation",
        "{name} recalls products over dangerous defects",
        "{name} reports losses and warns of layoffs",
        "Regulators penalize {name} over violations",
        "{name} shares slump after disappointing earnings",
        "{name} suspends dividend amid mounting losses",
        "{name} hit by lawsuit over failed merger",
        "{name} plant closure causes costly delays and losses",
        "{name} warns of impairment charges",
        "{name} struggles with declining margins",
        "Weak guidance drags {name} lower",
        "{name} admits serious accounting errors",
    ),
}
# Titles of stories about two instruments.
PAIR_TEMPLATES: dict[int, tuple[str, ...]] = {
    1: (
        "{name} and {other} sign profitable partnership",
        "{name} and {other} report strong gains from joint venture",
        "{name} and {other} achieve excellent results in joint research",
        "{name} and {other} merger creates stronger company, analysts say",
    ),
    0: (
        "{name} and {other} announce joint venture",
        "{name} and {other} sign supply contract",
        "{name} and {other} in talks over partnership",
        "{name} and {other} to combine distribution networks",
    ),
    -1: (
        "{name} and {other} merger talks collapse",
        "{name} and {other} joint venture fails",
        "{name} and {other} hit by losses in abandoned project",
        "{name} and {other} accused of fraud in price fixing probe",
    ),
}


@dataclass(frozen=True)
class TextEvents:
    """Generated stories: the events table's rows and the planted tone.

    ``rows``: every version delivered by the history's end, with ``_kt`` = ``delivered_at``.
    ``z``: days x instruments, the standardised net tone of the first versions counting at
    each bar, across the instruments with any (0 elsewhere); ``hit``: where it is set.
    """

    rows: pl.DataFrame
    z: np.ndarray
    hit: np.ndarray
    stories: int
    corrections: int
    retractions: int


def decision_times(dates: np.ndarray) -> np.ndarray:
    """Each daily bar's decision time, as UTC datetime64[us]: the text fields' own rule
    (``_text_fields.decision_times``, 16:00 in New York), so the planted tone leads the
    returns of the bar the fields count each story for."""
    from quarry.data._text_fields import decision_times as rule

    days = pl.Series(dates.astype("datetime64[D]"))
    return rule(days).dt.replace_time_zone(None).to_numpy()


def _local(dates: np.ndarray, at: time) -> np.ndarray:
    """``at`` in New York on each date, as UTC datetime64[us] (naive)."""
    stamps = [
        datetime.combine(day, at, NEW_YORK).astimezone(UTC).replace(tzinfo=None)
        for day in dates.astype(date)
    ]
    return np.array(stamps, dtype="datetime64[us]")


def draw_events(
    rng: np.random.Generator,
    rate: float,
    codes: list[str],
    dates: np.ndarray,
    alive: np.ndarray,
    known_by: datetime,
) -> TextEvents:
    """Draw Poisson(``rate``) stories per instrument and day alive, their versions, and the
    tone to plant; versions delivered after ``known_by`` (the history's end) are dropped."""
    ti, ii = np.nonzero(alive)
    counts = rng.poisson(rate, ti.size)
    day, inst = np.repeat(ti, counts), np.repeat(ii, counts)
    m = day.size
    tone = rng.choice(_TONES, size=m, p=_TONE_P)
    # Published at any second of its New York day; delivered seconds to minutes later, or
    # (a few) an hour to three days later.
    midnight = _local(dates, time(0)).astype(np.int64)
    published = midnight[day] + rng.integers(0, _DAY, m) * _US
    late = rng.random(m) < _LATE
    lag = np.where(late, rng.integers(3_600, 3 * _DAY, m), rng.integers(2, 900, m))
    delivered = published + lag * _US
    kind = rng.choice(len(_KINDS), size=m, p=_KIND_P)
    other = _partners(rng, inst, day, alive)

    # Titles: a template of the story's tone (pair templates for two instruments).
    pair = other >= 0
    pools = [TEMPLATES[t] for t in (-1, 0, 1)] + [PAIR_TEMPLATES[t] for t in (-1, 0, 1)]
    pool = (tone + 1) + 3 * pair
    size = np.array([len(p) for p in pools])[pool]
    offset = np.cumsum([0, *(len(p) for p in pools)])[:-1][pool]
    pick = (rng.random(m) * size).astype(np.int64)
    # A correction rewords the title with another template of the same tone, marked updated.
    reworded = (pick + 1 + (rng.random(m) * (size - 1)).astype(np.int64)) % size
    u = rng.random(m)
    fixed, pulled = u < _CORRECTED, (u >= _CORRECTED) & (u < _CORRECTED + _RETRACTED)
    after = delivered + rng.integers(_DAY, 10 * _DAY + 1, m) * _US

    flat = pl.Series([t for p in pools for t in p], dtype=pl.String)
    code = np.asarray(codes, dtype=object)
    partner = np.maximum(other, 0)
    first = pl.DataFrame(
        {
            "published_at": published.astype("datetime64[us]"),
            "delivered_at": delivered.astype("datetime64[us]"),
            "pair": pair,
            "name": code[inst],
            "other": code[partner],
            "kind": np.asarray(_KINDS, dtype=object)[kind],
            "source": np.asarray(_SOURCES, dtype=object)[kind],
            "template": flat.gather(offset + pick),
            "template_fix": flat.gather(offset + reworded),
            "fixed": fixed,
            "pulled": pulled,
            "after": after.astype("datetime64[us]"),
        },
        schema_overrides={c: pl.String for c in ("name", "other", "kind", "source")},
    )
    first = (
        first.with_columns(
            pl.col("published_at", "delivered_at", "after").dt.replace_time_zone("UTC"),
            pl.when(pl.col("pair"))
            .then(
                pl.concat_str(
                    pl.min_horizontal("name", "other"),
                    pl.lit(","),
                    pl.max_horizontal("name", "other"),
                )
            )
            .otherwise(pl.col("name"))
            .alias("instruments"),
            _render("template").alias("title"),
            (_render("template_fix") + UPDATED).alias("title_fix"),
        )
        .with_row_index("_n")
        .sort("published_at", "_n")
        .with_columns(
            pl.format("ev{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(9)).alias(
                "event_id"
            ),
            pl.lit(False).alias("retracted"),
            pl.lit(None, pl.String).alias("body"),
        )
    )
    columns = table_spec("events").names
    corrected = first.filter(pl.col("fixed")).with_columns(
        pl.col("after").alias("delivered_at"), pl.col("title_fix").alias("title")
    )
    retracted = first.filter(pl.col("pulled")).select(
        "event_id", pl.col("after").alias("delivered_at"), pl.lit(True).alias("retracted")
    )
    cutoff = pl.lit(known_by, KT_DTYPE)
    rows = (
        pl.concat(
            [first.select(columns), corrected.select(columns), retracted], how="diagonal_relaxed"
        )
        .select(columns)
        .filter(pl.col("delivered_at") <= cutoff)
        .with_columns(pl.col("delivered_at").cast(KT_DTYPE).alias(KT))
    )
    z, hit = planted_tone(
        np.concatenate([inst, other[pair]]),
        np.concatenate([tone, tone[pair]]),
        np.concatenate([delivered, delivered[pair]]),
        decision_times(dates).astype(np.int64),
        alive,
    )
    n_first = first.filter(pl.col("delivered_at") <= cutoff).height
    n_fixed = corrected.filter(pl.col("delivered_at") <= cutoff).height
    n_pulled = retracted.filter(pl.col("delivered_at") <= cutoff).height
    return TextEvents(rows, z, hit, n_first, n_fixed, n_pulled)


def _render(template: str) -> pl.Expr:
    return (
        pl.col(template)
        .str.replace("{name}", pl.col("name"), literal=True)
        .str.replace("{other}", pl.col("other"), literal=True)
    )


def _partners(
    rng: np.random.Generator, inst: np.ndarray, day: np.ndarray, alive: np.ndarray
) -> np.ndarray:
    """For about 5% of stories a second instrument alive that day (else -1)."""
    n = alive.shape[1]
    other = np.full(inst.size, -1, dtype=np.int64)
    todo = np.flatnonzero(rng.random(inst.size) < _PAIR)
    for _ in range(50):  # redraw those that hit the story's own or a dead instrument
        if not todo.size:
            break
        cand = rng.integers(0, n, todo.size)
        ok = alive[day[todo], cand] & (cand != inst[todo])
        other[todo[ok]] = cand[ok]
        todo = todo[~ok]
    return other


def planted_tone(
    inst: np.ndarray,
    tone: np.ndarray,
    delivered: np.ndarray,
    decision: np.ndarray,
    alive: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The standardised net tone per bar and instrument, and where any story counts.

    A story counts for the first bar of its instrument whose decision time is at or after
    its delivery (``delivered`` and ``decision`` in the same integer time unit); a story with
    no such bar (delivered after the instrument's last) counts for none.
    """
    d, n = alive.shape
    bar = np.searchsorted(decision, delivered, side="left")
    ok = bar < d
    ok[ok] = alive[bar[ok], inst[ok]]
    net = np.zeros((d, n))
    count = np.zeros((d, n), dtype=np.int64)
    np.add.at(net, (bar[ok], inst[ok]), tone[ok])
    np.add.at(count, (bar[ok], inst[ok]), 1)
    hit = count > 0
    k = hit.sum(axis=1)
    mean = np.where(hit, net, 0.0).sum(axis=1) / np.maximum(k, 1)
    dev = np.where(hit, net - mean[:, None], 0.0)
    sd = np.sqrt((dev**2).sum(axis=1) / np.maximum(k, 1))
    usable = (k >= 3) & (sd > 0)  # a bar with too few stories to rank plants nothing
    hit &= usable[:, None]
    z = np.where(hit, dev / np.where(usable, sd, 1.0)[:, None], 0.0)
    return z, hit
