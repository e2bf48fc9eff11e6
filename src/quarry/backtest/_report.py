"""The backtest report: one self-contained HTML file (plotly's script embedded, no CDN, so it
opens offline and can be mailed as it is)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from quarry.backtest._run import BacktestResult

__all__ = ["write_report"]

_LABELS = {
    "annualized_return": ("Annualized return", "pct"),
    "annualized_volatility": ("Annualized volatility", "pct"),
    "sharpe": ("Sharpe", "num"),
    "max_drawdown": ("Max drawdown", "pct"),
    "excess_annualized_return": ("Excess annualized return", "pct"),
    "information_ratio": ("Information ratio", "num"),
    "turnover": ("Average daily turnover", "pct"),
    "calmar": ("Calmar", "num"),
    "hit_rate": ("Hit rate", "pct"),
}


def _fmt(value: Any, kind: str) -> str:
    if not isinstance(value, int | float) or not np.isfinite(value):
        return "n/a"
    return f"{value:.2%}" if kind == "pct" else f"{value:.3f}"


def _table(metrics: dict[str, Any]) -> str:
    gross = metrics.get("gross", {})
    rows = "".join(
        f"<tr><td>{label}</td><td>{_fmt(metrics.get(key), kind)}</td>"
        f"<td>{_fmt(gross.get(key), kind)}</td></tr>"
        for key, (label, kind) in _LABELS.items()
    )
    return (
        "<table><thead><tr><th></th><th>net of costs</th><th>gross</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def write_report(result: BacktestResult, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    r = result.returns.sort("date")
    dates = r["date"].to_list()
    net = r["return_net"].to_numpy()
    gross = r["return_gross"].to_numpy()
    bench = r["benchmark"].to_numpy()
    wealth = np.cumprod(1 + net)
    drawdown = wealth / np.maximum.accumulate(wealth) - 1

    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.5, 0.25, 0.25],
        subplot_titles=("Cumulative return", "Drawdown (net)", "Daily turnover"),
        vertical_spacing=0.07,
    )
    for series, name in ((net, "strategy, net"), (gross, "strategy, gross"), (bench, "benchmark")):
        fig.add_trace(go.Scatter(x=dates, y=np.cumprod(1 + series) - 1, name=name), row=1, col=1)
    fig.add_trace(
        go.Scatter(x=dates, y=drawdown, name="drawdown", fill="tozeroy", showlegend=False),
        row=2,
        col=1,
    )
    fig.add_trace(
        go.Bar(x=dates, y=r["turnover"].to_numpy(), name="turnover", showlegend=False),
        row=3,
        col=1,
    )
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(height=800, margin={"t": 40, "b": 30}, legend={"orientation": "h"})

    monthly = (
        r.with_columns(pl.col("date").dt.year().alias("year"), pl.col("date").dt.month().alias("m"))
        .group_by("year", "m")
        .agg(((1 + pl.col("return_net")).product() - 1).alias("ret"))
        .sort("year", "m")
    )
    years = sorted(set(monthly["year"].to_list()))
    grid = np.full((len(years), 12), np.nan)
    for year, month, ret in monthly.iter_rows():
        grid[years.index(year), month - 1] = ret
    heat = go.Figure(
        go.Heatmap(
            z=grid,
            x=["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
            y=[str(y) for y in years],
            colorscale="RdYlGn",
            zmid=0,
            texttemplate="%{z:.1%}",
        )
    )
    heat.update_layout(title="Monthly returns (net)", height=120 + 28 * len(years))

    first, last = dates[0], dates[-1]
    body = "\n".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>Quarry backtest {html.escape(str(first))} to {html.escape(str(last))}</title>",
            "<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
            "table{border-collapse:collapse}td,th{padding:4px 12px;border-bottom:1px solid #ddd;"
            "text-align:right}td:first-child{text-align:left}</style></head><body>",
            f"<h1>Backtest, {html.escape(str(first))} to {html.escape(str(last))}</h1>",
            _table(result.metrics),
            fig.to_html(full_html=False, include_plotlyjs=True),
            heat.to_html(full_html=False, include_plotlyjs=False),
            "</body></html>",
        ]
    )
    path.write_text(body, encoding="utf-8")
