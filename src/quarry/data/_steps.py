"""As-of lookups between two frames sorted by (instrument, date), in vectorized numpy.

Many point-in-time values are step functions of date per instrument: an adjustment factor
from each ex-date on, a fundamental from its publication date on, universe membership from
each span's start. ``last_known`` evaluates such a step function on every row of a large
key-sorted frame, and ``locate`` finds where rows of a small frame belong in a large one.
Both work instrument by instrument on contiguous blocks found by binary search, so they
touch each large-frame row once, instead of hashing tens of millions of rows as an as-of
join would.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

__all__ = ["Lookup", "last_known", "locate"]


@dataclass(frozen=True)
class Lookup:
    """Per left row: ``values[name]`` (NaN where nothing is known) and ``covered`` (the row's
    instrument appears on the right at all)."""

    values: dict[str, np.ndarray]
    covered: np.ndarray


def _ticks(a: pl.Series, b: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """Two date or time columns on one integer line: days when both are dates, else
    microseconds since the epoch in UTC with a date at its midnight, so that a step dated D
    (an ex-date, a publication date) holds from the first intraday bar of day D on."""
    if a.dtype == pl.Date and b.dtype == pl.Date:
        return a.to_physical().to_numpy(), b.to_physical().to_numpy()
    return _micros(a), _micros(b)


def _micros(s: pl.Series) -> np.ndarray:
    zone = s.dtype.time_zone if isinstance(s.dtype, pl.Datetime) else "UTC"
    micros: np.ndarray = s.cast(pl.Datetime("us", zone)).to_physical().to_numpy()
    return micros


def _blocks(big: pl.Series, small: pl.Series) -> Iterator[tuple[int, int, int, int]]:
    """For each instrument of ``small`` (sorted): its rows [a, b) in ``small`` and [lo, hi) in
    ``big`` (sorted; an empty range at the insertion point when absent)."""
    names = small.unique(maintain_order=True)
    lo = big.search_sorted(names, side="left").to_numpy()
    hi = big.search_sorted(names, side="right").to_numpy()
    code = names.search_sorted(small).to_numpy()
    bounds = np.searchsorted(code, np.arange(len(names) + 1))
    for c in range(len(names)):
        yield int(bounds[c]), int(bounds[c + 1]), int(lo[c]), int(hi[c])


def last_known(
    left: pl.DataFrame,
    right: pl.DataFrame,
    left_on: str,
    right_on: str,
    values: Sequence[str],
    *,
    strict: bool = False,
) -> Lookup:
    """For each row of ``left``, the ``values`` of the last ``right`` row of the same
    instrument whose ``right_on`` is on or before (``strict``: before) its ``left_on``.

    Both frames must be sorted by instrument, then their date (or time) column; a date on
    one side and a time on the other compare as the date's midnight, UTC.
    """
    n = left.height
    out = {v: np.full(n, np.nan) for v in values}
    covered = np.zeros(n, dtype=bool)
    if n == 0 or right.height == 0:
        return Lookup(out, covered)
    ldays, rdays = _ticks(left[left_on], right[right_on])
    rvals = {v: right[v].cast(pl.Float64).fill_null(np.nan).to_numpy() for v in values}
    side: Literal["left", "right"] = "left" if strict else "right"
    for a, b, lo, hi in _blocks(left["instrument"], right["instrument"]):
        if hi == lo:
            continue
        covered[lo:hi] = True
        j = np.searchsorted(rdays[a:b], ldays[lo:hi], side=side) - 1
        hit = j >= 0
        for v in values:
            out[v][lo:hi][hit] = rvals[v][a:b][j[hit]]
    return Lookup(out, covered)


def locate(
    big: pl.DataFrame, small: pl.DataFrame, k0: str = "instrument", k1: str = "date"
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``small``: its insertion position in ``big`` and whether ``big`` has
    a row with exactly its key. Both frames must be sorted by (k0, k1); k1 is a date or time.

    Positions are non-decreasing in ``small``'s order, so inserting every missing row at its
    position (ties in order) keeps the result sorted.
    """
    pos = np.zeros(small.height, dtype=np.int64)
    found = np.zeros(small.height, dtype=bool)
    if small.height == 0:
        return pos, found
    bdays, sdays = _ticks(big[k1], small[k1])
    for a, b, lo, hi in _blocks(big[k0], small[k0]):
        seg, want = bdays[lo:hi], sdays[a:b]
        j = np.searchsorted(seg, want)
        pos[a:b] = lo + j
        if hi > lo:
            found[a:b] = seg[np.minimum(j, hi - lo - 1)] == want
    return pos, found
