"""Signal analysis on dense panels: dates x instruments arrays of scores and labels.

The same figures as ``_analysis`` computes from a long frame (and the same definitions: see
there), made with NumPy over whole rows instead of Polars group-bys over long rows. At 16,000
instruments x 2,520 days a backtest's analysis held 40 million long rows, and joining and
grouping them cost about 50 s; here two sorts of the panel (of the scores and of the labels)
give every rank and group, and the rest is arithmetic along rows.

A panel's dates are the calendar: each is a date of the analysis even with no value on it,
as each distinct date of a long frame is. A NaN (or infinite) score or label is missing.
Rows are cut into blocks that run on threads (NumPy's sorts and arithmetic release the GIL),
which also bounds the temporaries to a block's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import polars as pl

from quarry._memory import in_row_blocks
from quarry.exceptions import UsageError
from quarry.signals._report import DATE, SignalReport, _positive_int, ic_summary, long_short

__all__ = ["analyze_panel"]

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Ints = npt.NDArray[np.int64]


def analyze_panel(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    dates: Sequence[object] | pl.Series,
    instruments: Sequence[str],
    *,
    groups: int = 5,
    lag: int = 1,
) -> SignalReport:
    """``analyze`` of the long frame whose rows are this panel's cells.

    Parameters
    ----------
    scores, labels
        Arrays of dates x instruments; NaN where missing.
    dates
        The panel's dates, ascending and distinct: the analysis's calendar.
    instruments
        The columns' names, distinct; quantile-group ties are broken by name, in any column
        order.
    groups, lag
        As for ``analyze``.

    Returns
    -------
    SignalReport
        Equal to ``analyze`` of the long frame (to rounding: sums are taken in another order).
    """
    groups = _positive_int(groups, "groups", 2)
    lag = _positive_int(lag, "lag", 1)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.ndim != 2 or s.shape != y.shape:
        raise UsageError(
            f"scores and labels must be two arrays of the same dates x instruments shape, not "
            f"{s.shape} and {y.shape}"
        )
    days, width = s.shape
    if width == 0:
        raise UsageError("the panel has no instruments: give at least one column of scores")
    date_col = pl.Series(DATE, dates)
    if date_col.len() != days or len(instruments) != width:
        raise UsageError(
            f"{days:,} x {width:,} panels need {days:,} dates and {width:,} instruments, not "
            f"{date_col.len():,} and {len(instruments):,}"
        )
    if days > 1 and not (date_col.is_sorted() and date_col.n_unique() == days):
        raise UsageError("the panel's dates must be ascending and distinct, one per row")
    by_name = np.argsort(np.asarray(instruments, dtype=str), kind="stable")
    # ties are broken by name: columns in name order
    columns = None if np.array_equal(by_name, np.arange(width)) else by_name
    given_s, given_y = s, y
    scored, pairs = np.empty(s.shape, dtype=np.bool_), np.empty(s.shape, dtype=np.bool_)
    s, y = np.empty(s.shape), np.empty(s.shape)

    def keep_finite(rows: slice) -> None:
        sb, yb = given_s[rows], given_y[rows]
        if columns is not None:
            sb, yb = sb[:, columns], yb[:, columns]
        ok = np.isfinite(sb, out=scored[rows])
        both = np.logical_and(ok, np.isfinite(yb), out=pairs[rows])
        s[rows] = np.where(ok, sb, np.nan)
        y[rows] = np.where(both, yb, np.nan)

    in_row_blocks(keep_finite, days, width)

    # each row's columns by ascending score, ties in column (name) order, NaN last; and the
    # scores in that order
    order = np.empty(s.shape, dtype=np.int32)
    ranked = np.empty(s.shape)
    ic, rank_ic, n = np.empty(days), np.empty(days), np.empty(days, dtype=np.int64)
    qr_sum = np.zeros((days, groups))
    qr_count = np.zeros((days, groups), dtype=np.int64)
    # the turnover's groups, 0 for none
    grouped = np.zeros(s.shape, dtype=np.min_scalar_type(groups))
    auto = np.full(days, np.nan)

    def first_pass(rows: slice) -> None:
        sb, yb, pb = s[rows], y[rows], pairs[rows]
        ob, sv = _by_score(sb)
        at = _flat(ob)
        order[rows] = ob
        ranked[rows] = sv
        ys = _gather(yb, at)  # the labels in score order: NaN off the pairs
        kept = ~np.isnan(ys)
        n[rows] = kept.sum(axis=1)
        defined = _defined(sb, yb, pb)
        ic[rows] = np.where(defined, _pearson(sb, yb, pb), np.nan)
        rs = _scatter(_ranks(sv, kept), kept, at)
        oy = _flat(np.argsort(_nan_last(yb), axis=1))  # ties' order is no matter here
        ly = _gather(yb, oy)
        ry = _scatter(_ranks(ly, ~np.isnan(ly)), ~np.isnan(ly), oy)
        rank_ic[rows] = np.where(defined, _pearson(rs, ry, pb), np.nan)
        # quantile groups of the pairs (their labels' means), then of every scored instrument
        # (the turnover's): the scored come first in score order
        k = _groups(kept, groups)
        day, at_rank = np.nonzero(k)
        cell = day * groups + k[day, at_rank] - 1
        size = sv.shape[0] * groups
        qr_sum[rows] = np.bincount(cell, ys[day, at_rank], minlength=size).reshape(-1, groups)
        qr_count[rows] = np.bincount(cell, minlength=size).reshape(-1, groups)
        codes = _groups(~np.isnan(sv), groups).astype(grouped.dtype)
        grouped[rows].reshape(-1)[at] = codes

    def second_pass(rows: slice) -> None:
        now = slice(max(rows.start, lag), rows.stop)
        if now.start >= now.stop:
            return
        before = slice(now.start - lag, now.stop - lag)
        both = scored[now] & scored[before]
        a, b = s[now], s[before]
        defined = _defined(a, b, both)
        ranks = []
        for sorted_rows in (now, before):
            at = _flat(order[sorted_rows])
            kept = _gather(both, at)
            ranks.append(_scatter(_ranks(ranked[sorted_rows], kept), kept, at))
        auto[now] = np.where(defined, _pearson(ranks[0], ranks[1], both), np.nan)

    in_row_blocks(first_pass, days, width)
    # reads the orders of the rows before a block's own: after every block of the first pass
    in_row_blocks(second_pass, days, width)

    daily = pl.DataFrame(
        {DATE: date_col, "ic": _nulls(ic), "rank_ic": _nulls(rank_ic), "n": n},
        schema_overrides={"n": pl.Int64},
    )
    day, group = np.nonzero(qr_count)
    qr = pl.DataFrame(
        {
            DATE: date_col.gather(day),
            "group": (group + 1).astype(np.int64),
            "mean_return": qr_sum[day, group] / qr_count[day, group],
        }
    )
    return SignalReport(
        summary=ic_summary(daily),
        daily_ic=daily,
        quantile_returns=qr,
        long_short=long_short(qr),
        autocorr=pl.DataFrame({DATE: date_col, "autocorr": _nulls(auto)}).slice(lag),
        turnover=_turnover(grouped, date_col, groups),
    )


def _nulls(values: Floats) -> pl.Series:
    """Null for every value that is not a number (a correlation of values so extreme that
    their squares overflow or vanish), as the long frame's analysis gives."""
    return pl.Series(np.where(np.isfinite(values), values, np.nan)).fill_nan(None)


def _defined(x: Floats, y: Floats, keep: Bools) -> Bools:
    """Rows where a correlation of ``x`` and ``y`` over ``keep`` is defined: two pairs or
    more, and neither side constant (min < max is exact where a variance of equal floats
    can come out a hair above zero)."""
    with np.errstate(invalid="ignore"):
        spread_x = np.where(keep, x, -np.inf).max(axis=1) > np.where(keep, x, np.inf).min(axis=1)
        spread_y = np.where(keep, y, -np.inf).max(axis=1) > np.where(keep, y, np.inf).min(axis=1)
    out: Bools = (keep.sum(axis=1) >= 2) & spread_x & spread_y
    return out


def _pearson(x: Floats, y: Floats, keep: Bools) -> Floats:
    """Each row's Pearson correlation of ``x`` and ``y`` over ``keep`` (two passes: the
    means first, then the centred sums)."""
    count = np.maximum(keep.sum(axis=1), 1)[:, None]
    dx = np.where(keep, x - np.where(keep, x, 0.0).sum(axis=1, keepdims=True) / count, 0.0)
    dy = np.where(keep, y - np.where(keep, y, 0.0).sum(axis=1, keepdims=True) / count, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        out: Floats = (dx * dy).sum(axis=1) / np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
    return out


def _nan_last(values: Floats) -> Floats:
    """Sort keys of finite-or-NaN ``values``: NaN as +inf, which sorts last just the same.
    NumPy's vectorized (AVX-512) quicksort takes rows without NaN only: with them, sorting
    took twice as long (16,000 columns, 15% NaN)."""
    return np.where(np.isnan(values), np.inf, values)


def _by_score(block: Floats) -> tuple[Ints, Floats]:
    """Each row's columns by ascending score, ties in column order, NaN last (a stable
    sort's order), and the scores in that order. The fast unstable sort first; only rows
    where two scores tie are sorted again, stably (continuous scores seldom tie)."""
    order = np.argsort(_nan_last(block), axis=1)
    ordered = _gather(block, _flat(order))
    tied = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)  # NaN never equals: not a tie
    if tied.any():
        again = np.argsort(block[tied], axis=1, kind="stable")
        order[tied] = again
        ordered[tied] = np.take_along_axis(block[tied], again, axis=1)
    return order, ordered


def _flat(order: npt.NDArray[np.integer]) -> Ints:
    """Positions in a flattened block of each row's ``order`` (rows x width columns): NumPy's
    take on flat positions is several times faster than take_along_axis."""
    rows, width = order.shape
    out: Ints = order + (np.arange(rows, dtype=np.int64) * width)[:, None]
    return out


def _gather(values: np.ndarray, at: Ints) -> np.ndarray:
    return np.take(values.reshape(-1), at)


def _scatter(sorted_values: Floats, kept: Bools, at: Ints) -> Floats:
    """Values given in each row's sorted order back at their columns; NaN off ``kept``."""
    out = np.empty(sorted_values.shape)
    out.reshape(-1)[at] = np.where(kept, sorted_values, np.nan)
    return out


def _ranks(ordered: Floats, kept: Bools) -> Floats:
    """Ranks (1..n) among the ``kept`` cells of rows sorted ascending, ties at their average
    rank (meaningless off ``kept``). Equal values sit together in a sorted row, kept or not,
    so a run of equal values is a run of ties: its kept cells share the mean of the ranks
    they span."""
    rank = np.cumsum(kept, axis=1, dtype=np.int64)  # the last kept rank at or before a cell
    starts = np.ones(ordered.shape, dtype=np.bool_)
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=starts[:, 1:])  # NaN != NaN: no tie
    if starts.all():
        return rank.astype(np.float64)
    ends = np.empty_like(starts)
    ends[:, :-1] = starts[:, 1:]
    ends[:, -1] = True
    before = np.maximum.accumulate(np.where(starts, rank - kept, 0), axis=1)  # ranks before
    beyond = rank[:, -1:] + 1
    last = np.minimum.accumulate(np.where(ends, rank, beyond)[:, ::-1], axis=1)[:, ::-1]
    return (before + 1 + last) / 2.0


def _groups(kept: Bools, groups: int) -> npt.NDArray[np.int64]:
    """Quantile groups (1..groups, 0 for none) of each row's kept cells, given in sorted order:
    the r-th of n goes to group max(1, ceil((r - 1) * groups / (n - 1))), the bins
    ``pandas.qcut`` draws over 1..n (see ``_analysis._assign_groups``); a row with fewer than
    ``groups`` kept cells has none."""
    n = kept.sum(axis=1, keepdims=True)
    r = np.cumsum(kept, axis=1)
    k = np.maximum(((r - 1) * groups + n - 2) // np.maximum(n - 1, 1), 1)
    return np.where(kept & (n >= groups), k, 0)


def _turnover(grouped: npt.NDArray[np.integer], dates: pl.Series, groups: int) -> pl.DataFrame:
    """The share of each date's top (bottom) group that was not in it on the previous date;
    null where either date has no groups."""
    have = (grouped != 0).any(axis=1)
    both = have[1:] & have[:-1]
    out: dict[str, object] = {DATE: dates.slice(1)}
    for side, g in (("top_turnover", groups), ("bottom_turnover", 1)):
        now, before = grouped[1:] == g, grouped[:-1] == g
        members = now.sum(axis=1)
        stayed = (now & before).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            share = 1.0 - stayed / members
        out[side] = _nulls(np.where(both, share, np.nan))
    return pl.DataFrame(out)
