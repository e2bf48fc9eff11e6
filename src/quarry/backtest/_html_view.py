"""A backtest's rich view in a notebook (``BacktestResult._repr_html_``): its warnings and
notes, the metrics net and gross of costs, what was traded, the signal's headline figures,
and two charts from its returns: the cumulative return of the strategy (net) and of the
benchmark, and the net drawdown. The full report (monthly returns, turnover, exposure,
quantiles) is ``report.html``, which ``run_backtest`` writes with ``out``.

Takes the result's parts rather than the result, so that this module and ``_result`` do not
import each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from quarry._html import chart, figure, items, paragraph, table, view
from quarry._svg import line_chart
from quarry.backtest._labels import METRIC_LABELS, TRADING_LABELS

__all__ = ["backtest_html", "curves"]

Array = npt.NDArray[np.float64]

# the signal's headline figures (the report shows more of them, in a section of its own)
_SIGNAL_LABELS = {
    "ic": ("Mean IC", "ic"),
    "icir": ("ICIR", "num"),
    "rank_ic": ("Mean Rank IC", "ic"),
    "rank_icir": ("Rank ICIR", "num"),
    "long_short_mean": ("Mean daily long-short spread", "pct"),
}


def curves(returns: pl.DataFrame) -> pl.DataFrame:
    """date, net, benchmark (cumulative returns, ``prod(1 + r) - 1`` to each row; a missing
    return is a flat day) and drawdown (the net wealth's fall from its running peak, the
    starting wealth a peak too, as in ``max_drawdown``).

    Intraday bars become one row a day: the last cumulative returns of the day and its
    deepest drawdown.
    """
    r = returns.sort("date")

    def compound(column: str) -> Array:
        values = r[column].cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()
        return np.asarray(np.cumprod(1.0 + values) - 1.0, dtype=np.float64)

    net = compound("return_net")
    level = 1.0 + net
    drawdown = level / np.maximum(np.maximum.accumulate(level), 1.0) - 1.0
    frame = pl.DataFrame(
        {"date": r["date"], "net": net, "benchmark": compound("benchmark"), "drawdown": drawdown}
    )
    if frame["date"].dtype == pl.Date:
        return frame
    return frame.group_by(pl.col("date").dt.date(), maintain_order=True).agg(
        pl.col("net", "benchmark").last(), pl.col("drawdown").min()
    )


def _metrics_rows(metrics: Mapping[str, Any]) -> list[list[str]]:
    gross = metrics.get("gross")
    rows = []
    for key, (label, kind) in METRIC_LABELS.items():
        row = [label, figure(metrics.get(key), kind)]
        if isinstance(gross, Mapping):
            row.append(figure(gross.get(key), kind))
        rows.append(row)
    return rows


def _signal_rows(signal: Mapping[str, Any]) -> list[list[str]]:
    return [
        [label, figure(signal[key], kind)]
        for key, (label, kind) in _SIGNAL_LABELS.items()
        if key in signal
    ]


def backtest_html(
    metrics: Mapping[str, Any],
    returns: pl.DataFrame,
    *,
    warnings: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """The view of a backtest with these ``metrics`` and ``returns`` (see
    ``BacktestResult``)."""
    dates = returns["date"]
    title = "Backtest"
    if dates.len():
        title += f", {dates.min()!s} to {dates.max()!s}"
    unit = "bar" if metrics.get("frequency") == "intraday" else "day"
    parts = [items(warnings, "warnings"), items(notes, "notes")]
    header = ["", "net of costs", *(["gross"] if isinstance(metrics.get("gross"), Mapping) else [])]
    parts.append(table(_metrics_rows(metrics), header=header, name="metrics"))
    trading = [
        [label, figure(metrics[key], "int")]
        for key, label in TRADING_LABELS.items()
        if key in metrics
    ]
    if isinstance(metrics.get("optimizer"), Mapping):
        for key, count in metrics["optimizer"].items():
            what = key.removeprefix("status_").replace("_", " ")
            label = "Optimizer rebalances" if key == "rebalances" else f"Rebalances: {what}"
            trading.append([label, figure(count, "int")])
    if trading:
        parts.append(table(trading, header=["Trading", ""], name="trading"))
    if isinstance(metrics.get("signal"), Mapping):
        parts.append(table(_signal_rows(metrics["signal"]), header=["Signal", ""], name="signal"))
    c = curves(returns)
    if c.height:
        day = c["date"].to_numpy()
        cumulative = {"strategy, net": (day, c["net"].to_numpy()),
                      "benchmark": (day, c["benchmark"].to_numpy())}  # fmt: skip
        parts.append(chart(line_chart(cumulative, title="Cumulative return", y_format="pct")))
        worst = float(np.min(c["drawdown"].to_numpy(), initial=0.0))
        parts.append(
            chart(
                line_chart(
                    {"drawdown, net": (day, c["drawdown"].to_numpy())},
                    title=f"Drawdown, net (worst {worst:.1%})",
                    y_format="pct",
                )
            )
        )
    parts.append(
        paragraph(
            f"{returns.height:,} {unit}s of returns, from the first trading {unit} (the one after "
            "the first signal date) to the last; net is after trading costs; the benchmark is "
            "the equal-weighted universe unless one was given. The full report (monthly "
            "returns, turnover, exposure, quantiles) is report.html, which run_backtest "
            "writes with out=."
        )
    )
    return view(title, *parts, name="backtest")
