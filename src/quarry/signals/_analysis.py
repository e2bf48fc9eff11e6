"""Signal analysis: how well a score ranks tomorrow's returns, and how it behaves over time.

Every function takes a long frame with one row per instrument and date (``instrument``,
``date``, a score column, ``score`` unless told, and a label column, ``LABEL0`` unless told)
and returns a plain Polars frame or dict. Work is vectorized with Polars over all dates at once;
``analyze`` lays a frame with few empty cells out as dates x instruments arrays and measures it
there (``_panel``: the same figures, several times faster on tens of millions of rows).

Missing values: a null, NaN or infinite score or label is missing. Correlations on a date use
only the instruments that have both values (the *pairs*); a date with fewer than two pairs, or
on which either side is constant, has a null correlation, the way ``scipy.stats.pearsonr``
gives NaN for constant input. Summaries skip those dates.

Definitions, per date (cross-sectional):

- **IC**: Pearson correlation of score and label; **Rank IC**: Spearman correlation, i.e. the
  Pearson correlation of their ranks with ties given their average rank. ``ic_summary`` reports
  their means over days, ``ICIR = mean / std`` (``ddof=1``) and the t-statistic
  ``mean / (std / sqrt(days))``.
- **Quantile groups**: the instruments with both values are numbered 1..n by ascending score,
  ties broken by instrument name (so the result does not depend on row order), and cut into
  ``groups`` equal-count buckets exactly as ``pandas.qcut(ranks, groups)`` cuts those numbers
  (group 1 has the lowest scores). A date with fewer pairs than ``groups`` has no groups.
- **Autocorrelation**: Spearman correlation of each instrument's score on a date with its score
  ``lag`` dates earlier in the frame's calendar (the sorted distinct dates of the frame).
- **Turnover**: the share of the top (bottom) group's instruments on a date that were not in
  the top (bottom) group on the previous date of the calendar; groups here use every instrument
  with a score, label or not.

Example::

    report = analyze(predictions)  # a frame of instrument, date, score, LABEL0
    report.summary["rank_ic"], report.as_dict()["long_short_mean"]
"""

from __future__ import annotations

import numpy as np
import polars as pl

from quarry.exceptions import UsageError
from quarry.signals._panel import analyze_panel
from quarry.signals._report import (
    DATE,
    SignalReport,
    _positive_int,
    _require,
    ic_summary,
    long_short,
)

__all__ = [
    "SignalReport",
    "analyze",
    "autocorrelation",
    "daily_ic",
    "ic_summary",
    "long_short",
    "quantile_returns",
    "turnover",
]

INSTRUMENT = "instrument"
SCORE = "score"
LABEL = "LABEL0"


# -- checks -----------------------------------------------------------------------------------


def _unique_keys(frame: pl.DataFrame) -> None:
    dup = frame.select(INSTRUMENT, DATE).filter(pl.struct(INSTRUMENT, DATE).is_duplicated())
    if dup.height:
        first = dup.row(0)
        raise UsageError(
            f"{dup.height} rows share an (instrument, date) with another row, e.g. "
            f"{first[0]!r} on {first[1]}; keep one row per instrument and date"
        )


# -- building blocks --------------------------------------------------------------------------


def _value(column: str) -> pl.Expr:
    """A column as Float64 with every missing value (null, NaN, +-inf) as null."""
    x = pl.col(column).cast(pl.Float64)
    return pl.when(x.is_finite()).then(x).otherwise(None)


def _correlate(frame: pl.DataFrame, x: str, y: str) -> pl.DataFrame:
    """Per date of ``frame``: ``pearson`` and ``spearman`` (ties at their average rank) of the
    pairs where both ``x`` and ``y`` are present, and their count ``n``; a date with fewer
    than two pairs, or a constant side, has null correlations (and stays, with n = 0 when it
    has no pair at all).

    The pairs are taken before grouping: filtering inside each group's aggregation cost
    Polars five times the correlations themselves."""
    pairs = frame.filter(pl.col(x).is_not_null() & pl.col(y).is_not_null())
    xs, ys = pl.col(x), pl.col(y)
    # A constant side has no correlation; checking min < max is exact, whereas the variance of
    # equal floats can come out a hair above zero and give a meaningless number.
    defined = (pl.len() >= 2) & (xs.min() < xs.max()) & (ys.min() < ys.max())
    stats = pairs.group_by(DATE).agg(
        pl.when(defined).then(pl.corr(xs, ys)).otherwise(None).fill_nan(None).alias("pearson"),
        pl.when(defined)
        .then(pl.corr(xs.rank("average"), ys.rank("average")))
        .otherwise(None)
        .fill_nan(None)
        .alias("spearman"),
        pl.len().cast(pl.Int64).alias("n"),
    )
    return (
        frame.select(pl.col(DATE).unique())
        .join(stats, on=DATE, how="left")
        .with_columns(pl.col("n").fill_null(0))
    )


def _calendar(frame: pl.DataFrame, lag: int) -> pl.DataFrame:
    """The frame's distinct dates, sorted, each with the date ``lag`` steps before (or null)."""
    return frame.select(pl.col(DATE).unique().sort()).with_columns(
        pl.col(DATE).shift(lag).alias("prev")
    )


def _assign_groups(rows: pl.DataFrame, groups: int) -> pl.DataFrame:
    """Add ``group`` (1..groups) to rows of (instrument, date, s), dropping thin dates.

    Rows are numbered r = 1..n per date by ascending ``s``, ties broken by instrument; row r goes
    to the first group k with r <= 1 + (n - 1) * k / groups (row 1 to group 1), the bins
    ``pandas.qcut`` draws over the numbers 1..n. In integers: k = ceil((r - 1) * groups / (n - 1)).
    """
    r, n = pl.col("r"), pl.col("n")
    k = ((r - 1) * groups + n - 2) // (n - 1)
    return (
        rows.sort(DATE, "s", INSTRUMENT)
        .with_columns(
            pl.int_range(1, pl.len() + 1, dtype=pl.Int64).over(DATE).alias("r"),
            pl.len().over(DATE).cast(pl.Int64).alias("n"),
        )
        .filter(pl.col("n") >= groups)
        .with_columns(pl.max_horizontal(pl.lit(1, pl.Int64), k).alias("group"))
        .drop("r", "n")
    )


# -- public functions -------------------------------------------------------------------------


def daily_ic(frame: pl.DataFrame, score: str = SCORE, label: str = LABEL) -> pl.DataFrame:
    """The IC and Rank IC of a score against a label on each date.

    Parameters
    ----------
    frame
        A long frame with ``date``, the score column and the label column.
    score, label
        The column names.

    Returns
    -------
    pl.DataFrame
        One row per date of the frame, sorted: ``date``, ``ic`` (Pearson), ``rank_ic``
        (Spearman, ties at their average rank), ``n`` (the pairs used). The correlations are
        null where fewer than two pairs exist or either side is constant on that date.

    Raises
    ------
    UsageError
        A column is missing or not numeric.
    """
    _require(frame, (DATE, score, label))
    return (
        _correlate(frame.select(DATE, _value(score).alias("x"), _value(label).alias("y")), "x", "y")
        .sort(DATE)
        .select(DATE, pl.col("pearson").alias("ic"), pl.col("spearman").alias("rank_ic"), "n")
    )


def quantile_returns(
    frame: pl.DataFrame, score: str = SCORE, label: str = LABEL, groups: int = 5
) -> pl.DataFrame:
    """The mean label of each score quantile group on each date.

    Per date, the instruments with both a score and a label are numbered by ascending score,
    ties broken by instrument name, and cut into ``groups`` equal-count groups as
    ``pandas.qcut(numbers, groups)`` would: group 1 holds the lowest scores, group ``groups``
    the highest. A date with fewer such instruments than ``groups`` is left out.

    Returns
    -------
    pl.DataFrame
        ``date``, ``group`` (1..groups), ``mean_return``; sorted by date and group.
    """
    groups = _positive_int(groups, "groups", 2)
    _require(frame, (INSTRUMENT, DATE, score, label))
    rows = frame.select(
        INSTRUMENT, DATE, _value(score).alias("s"), _value(label).alias("y")
    ).drop_nulls(["s", "y"])
    return (
        _assign_groups(rows, groups)
        .group_by(DATE, "group")
        .agg(pl.col("y").mean().alias("mean_return"))
        .sort(DATE, "group")
    )


def autocorrelation(frame: pl.DataFrame, score: str = SCORE, lag: int = 1) -> pl.DataFrame:
    """The Spearman correlation of each instrument's score with its score ``lag`` dates before.

    The earlier date is the ``lag``-th previous date in the frame's calendar (its distinct
    dates), whether or not an instrument has a row there. Only instruments with a score on
    both dates count; fewer than two, or a constant side, give null.

    Returns
    -------
    pl.DataFrame
        ``date``, ``autocorr`` for every calendar date but the first ``lag``; sorted by date.
    """
    lag = _positive_int(lag, "lag", 1)
    _require(frame, (INSTRUMENT, DATE, score))
    _unique_keys(frame)
    return _autocorrelation(frame, score, lag)


def _autocorrelation(frame: pl.DataFrame, score: str, lag: int) -> pl.DataFrame:
    values = frame.select(INSTRUMENT, DATE, _value(score).alias("s"))
    earlier = values.rename({DATE: "prev", "s": "s_prev"})
    pairs = (
        values.join(_calendar(frame, lag), on=DATE)
        .filter(pl.col("prev").is_not_null())
        .join(earlier, on=[INSTRUMENT, "prev"], how="left")
    )
    return (
        _correlate(pairs, "s", "s_prev")
        .sort(DATE)
        .select(DATE, pl.col("spearman").alias("autocorr"))
    )


def turnover(frame: pl.DataFrame, score: str = SCORE, groups: int = 5) -> pl.DataFrame:
    """The share of the top and bottom groups' instruments that are new since the previous date.

    Groups are cut as in ``quantile_returns`` but over every instrument with a score (a label
    is not needed to be held). On each date, ``top_turnover`` is the share of the top group's
    instruments that were not in the top group on the previous calendar date; likewise
    ``bottom_turnover`` for group 1. It is null when either date has no groups (fewer scored
    instruments than ``groups``).

    Returns
    -------
    pl.DataFrame
        ``date``, ``top_turnover``, ``bottom_turnover`` for every calendar date but the first;
        sorted by date.
    """
    groups = _positive_int(groups, "groups", 2)
    _require(frame, (INSTRUMENT, DATE, score))
    _unique_keys(frame)
    return _turnover(frame, score, groups)


def _turnover(frame: pl.DataFrame, score: str, groups: int) -> pl.DataFrame:
    rows = frame.select(INSTRUMENT, DATE, _value(score).alias("s")).drop_nulls("s")
    grouped = _assign_groups(rows, groups).select(INSTRUMENT, DATE, "group")
    calendar = _calendar(frame, 1).filter(pl.col("prev").is_not_null())
    # The dates on which both this date and the previous one have groups.
    grouped_dates = grouped.select(pl.col(DATE).unique())
    out = calendar.join(grouped_dates, on=DATE, how="semi").join(
        grouped_dates.rename({DATE: "prev"}), on="prev", how="semi"
    )
    for side, g in (("top", groups), ("bottom", 1)):
        members = grouped.filter(pl.col("group") == g).select(INSTRUMENT, DATE)
        was_there = members.rename({DATE: "prev"}).with_columns(pl.lit(True).alias("was"))
        share = (
            members.join(calendar, on=DATE)
            .join(was_there, on=[INSTRUMENT, "prev"], how="left")
            .group_by(DATE)
            .agg((1.0 - pl.col("was").fill_null(False).cast(pl.Float64).mean()).alias(side))
        )
        out = out.join(share, on=DATE, how="left")
    return (
        calendar.select(DATE)
        .join(out.drop("prev"), on=DATE, how="left")
        .sort(DATE)
        .select(
            DATE, pl.col("top").alias("top_turnover"), pl.col("bottom").alias("bottom_turnover")
        )
    )


def analyze(
    frame: pl.DataFrame,
    score: str = SCORE,
    label: str = LABEL,
    *,
    groups: int = 5,
    lag: int = 1,
    one_row_per_key: bool = False,
) -> SignalReport:
    """Run every analysis of this module on one score.

    Parameters
    ----------
    frame
        A long frame with ``instrument``, ``date``, the score column and the label column,
        one row per instrument and date.
    score, label
        The column names.
    groups
        How many quantile groups (for the returns and the turnover).
    lag
        How many calendar dates back the autocorrelation looks.
    one_row_per_key
        The caller guarantees one row per instrument and date (a frame laid out from a
        dense grid, as a backtest's): the check, which costs seconds on tens of millions of
        rows, is skipped. Otherwise it is made once.

    Returns
    -------
    SignalReport

    Examples
    --------
    ::

        report = analyze(predictions, groups=10)
        report.as_dict()["rank_ic"]
    """
    _require(frame, (INSTRUMENT, DATE, score, label))
    lag = _positive_int(lag, "lag", 1)
    groups = _positive_int(groups, "groups", 2)
    if not one_row_per_key:
        _unique_keys(frame)
    panel = _dense_panel(frame, score, label)
    if panel is not None:
        return analyze_panel(*panel, groups=groups, lag=lag)
    daily = daily_ic(frame, score, label)
    qr = quantile_returns(frame, score, label, groups)
    return SignalReport(
        summary=ic_summary(daily),
        daily_ic=daily,
        quantile_returns=qr,
        long_short=long_short(qr),
        autocorr=_autocorrelation(frame, score, lag),
        turnover=_turnover(frame, score, groups),
    )


# A frame is analyzed as a dates x instruments panel (``_panel``) when the panel holds at most
# this many cells per row of the frame: a panel of a sparse frame (a few dates for each of
# many instruments) would be mostly empty memory.
PANEL_FILL = 2


def _dense_panel(
    frame: pl.DataFrame, score: str, label: str
) -> tuple[np.ndarray, np.ndarray, pl.Series, list[str]] | None:
    """The frame's scores and labels as dates x instruments arrays (NaN where missing), its
    dates and its instruments; None for a frame better analyzed long (sparse, or with null
    keys)."""
    if frame.height == 0 or frame[INSTRUMENT].null_count() or frame[DATE].null_count():
        return None
    if frame.schema[INSTRUMENT] != pl.String:  # the long path orders ties by the column's own
        return None  # order (integers by number, an enum by its categories), a panel by text
    names = frame[INSTRUMENT]
    instruments = names.unique().sort()
    dates = frame[DATE].unique().sort()
    if instruments.len() * dates.len() > PANEL_FILL * frame.height:
        return None
    # an enum's codes are the positions of its (sorted) names: a join-free column index
    col = names.cast(pl.Enum(instruments)).to_physical().cast(pl.Int64).to_numpy()
    row = dates.search_sorted(frame[DATE], side="left").cast(pl.Int64).to_numpy()
    shape = (dates.len(), instruments.len())
    out = []
    for column in (score, label):
        panel = np.full(shape, np.nan)
        panel[row, col] = frame.select(_value(column)).to_series().fill_null(np.nan).to_numpy()
        out.append(panel)
    return out[0], out[1], dates, instruments.to_list()
