"""A signal analysis's rich view in a notebook (``SignalReport._repr_html_``): its summary
(IC, ICIR, Rank IC, Rank ICIR, t-statistics, days, long-short spread, autocorrelation,
turnover), a chart of the daily IC and Rank IC as rolling means, and each quantile group's
mean return.

Takes the report's parts rather than the report, so that this module and ``_report`` do not
import each other.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from quarry._html import chart, figure, paragraph, table, view
from quarry._svg import line_chart

__all__ = ["SMOOTH", "rolling_ic", "signal_html"]

SMOOTH = 20  # days in the IC chart's rolling means, as in the backtest report

_SUMMARY = (
    ("ic", "Mean IC", "ic"),
    ("icir", "ICIR", "num"),
    ("rank_ic", "Mean Rank IC", "ic"),
    ("rank_icir", "Rank ICIR", "num"),
    ("ic_t", "IC t-statistic", "num"),
    ("rank_ic_t", "Rank IC t-statistic", "num"),
    ("days", "Days with an IC", "int"),
    ("long_short_mean", "Mean long-short spread", "pct"),
    ("autocorr_mean", "Mean score autocorrelation", "num"),
    ("turnover_mean", "Mean top-group turnover", "pct"),
)


def rolling_ic(daily_ic: pl.DataFrame) -> pl.DataFrame:
    """date, ic, rank_ic: each a ``SMOOTH``-day rolling mean of the daily values over the
    rows of ``daily_ic`` sorted by date (a day without a value is skipped, not a zero)."""
    return daily_ic.sort("date").select(
        "date",
        pl.col("ic", "rank_ic").cast(pl.Float64).fill_nan(None).rolling_mean(SMOOTH, min_samples=1),
    )


def _quantile_rows(quantile_returns: pl.DataFrame, long_short: pl.DataFrame) -> list[list[str]]:
    groups = (
        quantile_returns.group_by("group")
        .agg(pl.col("mean_return").mean().alias("mean"), pl.col("date").n_unique().alias("dates"))
        .sort("group")
    )
    rows = [
        [f"group {g}", figure(mean, "pct"), figure(dates, "int")]
        for g, mean, dates in groups.iter_rows()
    ]
    spread = long_short["spread"].drop_nulls()
    if groups.height:
        rows.append(["long-short (top less bottom)", figure(spread.mean(), "pct"),
                     figure(spread.len(), "int")])  # fmt: skip
    return rows


def signal_html(
    summary: Mapping[str, float],
    daily_ic: pl.DataFrame,
    quantile_returns: pl.DataFrame,
    long_short: pl.DataFrame,
) -> str:
    """The view of a signal analysis; ``summary`` holds ``SignalReport.summary`` and the
    means of ``SignalReport.as_dict``."""
    rows = [
        [label, figure(summary.get(key), kind)] for key, label, kind in _SUMMARY if key in summary
    ]
    parts = [table(rows, header=["Signal", ""], name="summary")]
    ic = rolling_ic(daily_ic)
    if ic.height:
        day = ic["date"].to_numpy()
        series = {f"Rank IC, {SMOOTH}-day mean": (day, ic["rank_ic"].to_numpy()),
                  f"IC, {SMOOTH}-day mean": (day, ic["ic"].to_numpy())}  # fmt: skip
        parts.append(chart(line_chart(series, title="Information coefficient", y_format="num")))
    parts.append(
        table(
            _quantile_rows(quantile_returns, long_short),
            header=["Quantile", "mean return", "dates"],
            name="quantiles",
        )
    )
    parts.append(
        paragraph(
            "IC: each day's cross-sectional correlation of score and label (Rank IC: of their "
            "ranks). Quantiles: the instruments cut each day into equal-count groups by score, "
            "group 1 the lowest; a group's mean label over the days it has."
        )
    )
    return view("Signal analysis", *parts, name="signal")
