"""As-of lookups between two frames sorted by (instrument, date), in vectorized numpy.

Many point-in-time values are step functions of date per instrument: an adjustment factor
from each ex-date on, a fundamental from its publication date on, universe membership from
each span's start. ``last_known`` evaluates such a step function on every row of a large
key-sorted frame with one binary search over packed (instrument, day) keys, which is much
cheaper than a hash-partitioned as-of join on tens of millions of rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["Lookup", "last_known", "locate"]

_DAY_OFFSET = 1 << 31  # days since 1970 as a non-negative 32-bit field of the packed key


@dataclass(frozen=True)
class Lookup:
    """Per left row: ``values[name]`` (NaN where nothing is known) and ``covered`` (the row's
    instrument appears on the right at all)."""

    values: dict[str, np.ndarray]
    covered: np.ndarray


def _days(s: pl.Series) -> np.ndarray:
    days: np.ndarray = s.cast(pl.Date).to_physical().to_numpy().astype(np.int64) + _DAY_OFFSET
    return days


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

    Both frames must be sorted by instrument, then their date column.
    """
    n = left.height
    out = {v: np.full(n, np.nan) for v in values}
    covered = np.zeros(n, dtype=bool)
    if n == 0 or right.height == 0:
        return Lookup(out, covered)
    names = right["instrument"].unique(maintain_order=True)
    lo = left["instrument"].search_sorted(names, side="left").to_numpy().astype(np.int64)
    hi = left["instrument"].search_sorted(names, side="right").to_numpy().astype(np.int64)
    lens = hi - lo
    total = int(lens.sum())
    if total == 0:
        return Lookup(out, covered)
    # The left rows of instruments that appear on the right, and each one's instrument code.
    starts = np.cumsum(lens) - lens
    rows = np.arange(total, dtype=np.int64) - np.repeat(starts - lo, lens)
    lcode = np.repeat(np.arange(len(names), dtype=np.int64), lens)
    lkey = (lcode << 32) + _days(left[left_on])[rows]
    rcode = names.search_sorted(right["instrument"]).to_numpy().astype(np.int64)
    rkey = (rcode << 32) + _days(right[right_on])
    j = np.searchsorted(rkey, lkey, side="left" if strict else "right") - 1
    hit = (j >= 0) & (rcode[np.maximum(j, 0)] == lcode)
    covered[rows] = True
    for v in values:
        column = right[v].cast(pl.Float64).fill_null(np.nan).to_numpy()
        out[v][rows[hit]] = column[j[hit]]
    return Lookup(out, covered)


def locate(
    big: pl.DataFrame, small: pl.DataFrame, k0: str = "instrument", k1: str = "date"
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``small``: its insertion position in ``big`` and whether ``big`` has
    a row with exactly its key. Both frames must be sorted by (k0, k1); k1 is a date.

    Positions are non-decreasing in ``small``'s order, so inserting every missing row at its
    position (ties in order) keeps the result sorted.
    """
    if small.height == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    names = small[k0].unique(maintain_order=True)
    lo = big[k0].search_sorted(names, side="left").to_numpy().astype(np.int64)
    hi = big[k0].search_sorted(names, side="right").to_numpy().astype(np.int64)
    lens = hi - lo
    total = int(lens.sum())
    scode = names.search_sorted(small[k0]).to_numpy().astype(np.int64)
    if total == 0:
        return hi[scode], np.zeros(small.height, dtype=bool)
    starts = np.cumsum(lens) - lens
    rows = np.arange(total, dtype=np.int64) - np.repeat(starts - lo, lens)
    bcode = np.repeat(np.arange(len(names), dtype=np.int64), lens)
    bkey = (bcode << 32) + _days(big[k1])[rows]
    skey = (scode << 32) + _days(small[k1])
    j = np.searchsorted(bkey, skey, side="left")
    jc = np.minimum(j, total - 1)
    in_block = (j < total) & (bcode[jc] == scode)
    found = in_block & (bkey[jc] == skey)
    return np.where(in_block, rows[jc], hi[scode]), found
