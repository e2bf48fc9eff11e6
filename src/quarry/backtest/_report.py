"""The backtest report: one self-contained HTML file (plotly's script embedded once, no CDN,
so it opens offline and can be mailed as it is) and PNG copies of the main charts beside it.

What it shows, each section with a heading and a caption:

- the backtest's warnings (most of the signal off the store's market, nothing traded, days
  without a position, optimizer fallbacks) and notes (what the market lacks and how the
  backtest decided without it);
- the metrics, net and gross of costs, over the days returns.parquet holds: from the first
  trading day (the market day after the first signal date) to the last;
- what was traded: days, days without a position, orders filled and blocked, and how many
  of the signal's scores were on the store's market;
- cumulative return of the strategy (net, gross) against the benchmark; drawdown; turnover;
- a heatmap of compounded monthly returns (``monthly_table``);
- active industry exposure, when the result has ``exposure``;
- the signal's IC series, its summary and quantile returns, when the result has ``signal``;
- the optimizer's decisions, counted by status, with every non-optimal one listed, when the
  result has ``decisions``.

The PNGs are drawn by matplotlib's Agg canvas on a ``Figure`` of their own (no pyplot, so no
global state and no display needed).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import polars as pl

from quarry.backtest._labels import METRIC_LABELS, TRADING_LABELS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from quarry.backtest._result import BacktestResult
    from quarry.signals import SignalReport

__all__ = ["PNGS", "exposure_grid", "monthly_table", "write_report"]

#: every PNG the report may draw (with ``png``)
PNGS = ("cumulative.png", "drawdown.png", "monthly_returns.png", "turnover.png",
        "industry_exposure.png", "ic.png", "quantile_returns.png")  # fmt: skip

Array = npt.NDArray[np.float64]
Dates = npt.NDArray[np.datetime64]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
OPTIMAL = "optimal"
_SMOOTH = 20  # days in the IC's and turnover's rolling mean
_DPI = 100
_CLIP = 98.0  # exposure colors saturate beyond this percentile of the absolute active weight

_SIGNAL_LABELS = {
    "ic": ("Mean IC", "num"),
    "icir": ("ICIR", "num"),
    "rank_ic": ("Mean Rank IC", "num"),
    "rank_icir": ("Rank ICIR", "num"),
    "ic_t": ("IC t-statistic", "num"),
    "rank_ic_t": ("Rank IC t-statistic", "num"),
    "days": ("Days with an IC", "int"),
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}"
    "table{border-collapse:collapse;margin:0.5em 0 1em}"
    "td,th{padding:4px 12px;border-bottom:1px solid #ddd;text-align:right}"
    "td:first-child,th:first-child{text-align:left}"
    "p.caption{color:#555;margin:0.2em 0 0.6em}"
    "p.warning{background:#fff3cd;border-left:4px solid #e0a800;padding:6px 10px}"
    "p.note{background:#eef4fb;border-left:4px solid #5b8fc7;padding:6px 10px}"
    "div.scroll{max-height:360px;overflow-y:auto;display:inline-block}"
    "h2{margin-top:1.6em}"
)


# -- the numbers behind the charts --------------------------------------------------------------


def monthly_table(returns: pl.DataFrame, column: str = "return_net") -> tuple[list[int], Array]:
    """Compounded return of each calendar month: ``prod(1 + r) - 1`` over its days.

    Parameters
    ----------
    returns
        A frame with ``date`` and ``column`` (daily simple returns).
    column
        The return column.

    Returns
    -------
    years, table
        The calendar years with at least one day, ascending, and a ``(len(years), 12)`` array
        whose row ``i``, column ``m`` is the return of month ``m + 1`` of ``years[i]``; NaN for a
        month without a day.

    Examples
    --------
    ::

        years, table = monthly_table(result.returns)
        table[years.index(2021), 0]  # January 2021
    """
    monthly = (
        returns.select(
            pl.col("date").dt.year().alias("year"),
            pl.col("date").dt.month().alias("month"),
            pl.col(column).cast(pl.Float64).alias("r"),
        )
        .group_by("year", "month")
        .agg(((1.0 + pl.col("r")).product() - 1.0).alias("ret"))
    )
    years = sorted(monthly["year"].unique().to_list())
    table = np.full((len(years), 12), np.nan)
    row = {year: i for i, year in enumerate(years)}
    for year, month, ret in monthly.iter_rows():
        table[row[year], month - 1] = ret
    return years, table


def exposure_grid(exposure: pl.DataFrame, column: str = "active") -> tuple[list[str], pl.DataFrame]:
    """The exposure as a wide frame: one row per date, one column per industry.

    Industries are ordered by their mean ``column`` over the dates, largest first (ties by
    name), so the biggest overweights lead and the biggest underweights close. A date on which
    an industry has no row holds null there.

    Returns
    -------
    industries, wide
        The industry names in that order, and a frame of ``date`` then those columns.
    """
    long = exposure.select(
        "date",
        pl.col("industry").cast(pl.String).fill_null("(none)"),
        pl.col(column).cast(pl.Float64),
    )
    order = (
        long.group_by("industry")
        .agg(pl.col(column).mean().fill_null(0.0).alias("mean"))
        .sort(["mean", "industry"], descending=[True, False])["industry"]
        .to_list()
    )
    wide = long.pivot(on="industry", index="date", values=column, aggregate_function="sum")
    return order, wide.sort("date").select("date", *order)


def _compound(returns: pl.Series) -> Array:
    """Cumulative return, ``prod(1 + r) - 1`` to each day; a missing return is a flat day."""
    values = returns.cast(pl.Float64).fill_null(0.0).fill_nan(0.0).to_numpy()
    return np.asarray(np.cumprod(1.0 + values) - 1.0, dtype=np.float64)


@dataclass(frozen=True)
class _Curves:
    """The daily series the charts share, computed once."""

    dates: Dates  # numpy, not Python dates: plotly and matplotlib
    # convert an array at once, and plotly deep-copies a list element by element
    wealth: dict[str, Array]  # cumulative return by name: strategy net, gross, benchmark
    drawdown: Array
    turnover: Array
    turnover_mean: Array


def _curves(returns: pl.DataFrame) -> _Curves:
    r = returns.sort("date")
    wealth = {
        name: _compound(r[column])
        for name, column in (
            ("strategy, net", "return_net"),
            ("strategy, gross", "return_gross"),
            ("benchmark", "benchmark"),
        )
    }
    level = 1.0 + wealth["strategy, net"]
    turnover = r["turnover"].cast(pl.Float64)
    return _Curves(
        dates=r["date"].to_numpy(),
        wealth=wealth,
        drawdown=level / np.maximum.accumulate(level) - 1.0,
        turnover=turnover.to_numpy(),
        turnover_mean=turnover.rolling_mean(_SMOOTH, min_samples=1).to_numpy(),
    )


def _ic_series(signal: SignalReport) -> pl.DataFrame:
    """date, ic, rank_ic and their rolling means (nulls skipped, not filled)."""
    daily = signal.daily_ic.sort("date").with_columns(
        pl.col("ic", "rank_ic").cast(pl.Float64),
    )
    return daily.with_columns(
        pl.col("ic").rolling_mean(_SMOOTH, min_samples=1).alias("ic_mean"),
        pl.col("rank_ic").rolling_mean(_SMOOTH, min_samples=1).alias("rank_ic_mean"),
    )


def _quantile_curves(signal: SignalReport) -> tuple[Dates, dict[str, Array], dict[str, float]]:
    """Dates, each group's and the long-short spread's compounded return, and each group's mean
    daily return. A date on which a group has no return counts as a flat day for it."""
    qr = signal.quantile_returns
    wide = (
        qr.pivot(on="group", index="date", values="mean_return")
        .join(signal.long_short, on="date", how="full", coalesce=True)
        .sort("date")
    )
    means = {
        f"group {g}": np.nan if m is None else float(m)
        for g, m in qr.group_by("group").agg(pl.col("mean_return").mean()).sort("group").rows()
    }
    curves = {name: _compound(wide[name.removeprefix("group ")]) for name in means}
    curves["long-short"] = _compound(wide["spread"])
    return wide["date"].to_numpy(), curves, means


def _color_limit(z: Array, clip: float) -> tuple[float, bool]:
    """A symmetric color limit: the ``clip`` percentile of ``|z|`` (positive), and whether
    some value lies beyond it."""
    finite = np.abs(z[np.isfinite(z)])
    if not finite.size:
        return 0.01, False
    limit = float(np.percentile(finite, clip))
    limit = limit if limit > 0 else max(float(finite.max()), 0.01)
    return limit, float(finite.max()) > limit


# -- HTML ----------------------------------------------------------------------------------------


def _fmt(value: Any, kind: str) -> str:
    if not isinstance(value, int | float) or not np.isfinite(value):
        return "n/a"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:.2%}" if kind == "pct" else f"{value:.3f}"


def _metrics_table(metrics: dict[str, Any]) -> str:
    gross = metrics.get("gross", {})
    rows = "".join(
        f"<tr><td>{label}</td><td>{_fmt(metrics.get(key), kind)}</td>"
        f"<td>{_fmt(gross.get(key), kind)}</td></tr>"
        for key, (label, kind) in METRIC_LABELS.items()
    )
    return (
        "<table><thead><tr><th></th><th>net of costs</th><th>gross</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _signal_table(summary: dict[str, float], long_short_mean: float) -> str:
    rows = [
        f"<tr><td>{label}</td><td>{_fmt(summary.get(key), kind)}</td></tr>"
        for key, (label, kind) in _SIGNAL_LABELS.items()
    ]
    rows.append(
        f"<tr><td>Mean daily long-short spread</td><td>{_fmt(long_short_mean, 'pct')}</td></tr>"
    )
    return f"<table><tbody>{''.join(rows)}</tbody></table>"


def _trading_table(metrics: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{label}</td><td>{_fmt(metrics[key], 'int')}</td></tr>"
        for key, label in TRADING_LABELS.items()
        if key in metrics
    )
    return f"<table><tbody>{rows}</tbody></table>"


def _status() -> pl.Expr:
    return pl.col("status").cast(pl.String).fill_null("(none)")


def _status_counts(decisions: pl.DataFrame) -> list[tuple[str, int]]:
    counts = decisions.group_by(_status()).len().sort(["len", "status"], descending=[True, False])
    pairs = [(str(s), int(n)) for s, n in counts.iter_rows()]
    # optimal first, then the fallbacks by how often they were taken
    return sorted(pairs, key=lambda p: p[0] != OPTIMAL)


def _fallbacks(decisions: pl.DataFrame) -> pl.DataFrame:
    """The rebalances that were not solved as posed, by date."""
    return decisions.filter(_status() != OPTIMAL).sort("date")


def _decisions_html(decisions: pl.DataFrame) -> str:
    total = decisions.height
    if total == 0:
        return "<p>No rebalance was recorded.</p>"
    counts = "".join(
        f"<tr><td>{html.escape(status)}</td><td>{n:,}</td><td>{n / total:.1%}</td></tr>"
        for status, n in _status_counts(decisions)
    )
    parts = [
        "<table><thead><tr><th>status</th><th>rebalances</th><th>share</th></tr></thead>"
        f"<tbody>{counts}</tbody></table>"
    ]
    fallbacks = _fallbacks(decisions)
    if fallbacks.height == 0:
        parts.append(f"<p>All {total:,} rebalances were solved as posed.</p>")
    else:
        rows = "".join(
            f"<tr><td>{html.escape(str(d))}</td><td>{html.escape(str(s))}</td>"
            f"<td>{html.escape('' if x is None else str(x))}</td></tr>"
            for d, s, x in fallbacks.select("date", "status", "detail").iter_rows()
        )
        parts.append(
            f"<h3>Rebalances not solved as posed ({fallbacks.height:,})</h3>"
            "<div class='scroll'><table><thead><tr><th>date</th><th>status</th>"
            f"<th>detail</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    return "".join(parts)


def _section(title: str, caption: str, *content: str) -> str:
    return (
        f"<section><h2>{html.escape(title)}</h2>"
        f"<p class='caption'>{html.escape(caption)}</p>{''.join(content)}</section>"
    )


class _Plotly:
    """Renders figures to HTML fragments; plotly.js goes into the first one only."""

    def __init__(self) -> None:
        self._embedded = False

    def __call__(self, fig: Any) -> str:
        out: str = fig.to_html(
            full_html=False,
            include_plotlyjs=not self._embedded,
            config={"displaylogo": False},
        )
        self._embedded = True
        return out


def _html_performance(c: _Curves) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        row_heights=[0.5, 0.25, 0.25],
        subplot_titles=("Cumulative return", "Drawdown (net)", "Daily turnover"),
        vertical_spacing=0.07,
    )
    for name, curve in c.wealth.items():
        fig.add_trace(go.Scatter(x=c.dates, y=curve, name=name, mode="lines"), row=1, col=1)
    fig.add_trace(
        go.Scatter(
            x=c.dates, y=c.drawdown, name="drawdown", fill="tozeroy", mode="lines",
            line={"color": "#c0392b"}, showlegend=False,
        ),
        row=2,
        col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(x=c.dates, y=c.turnover, name="turnover", marker_color="#9ab", showlegend=False),
        row=3,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=c.dates, y=c.turnover_mean, name=f"turnover, {_SMOOTH}-day mean", mode="lines",
            line={"color": "#135"},
        ),
        row=3,
        col=1,
    )  # fmt: skip
    fig.update_yaxes(tickformat=".0%")
    fig.update_layout(height=800, margin={"t": 40, "b": 30}, legend={"orientation": "h"})
    return fig


def _html_monthly(years: list[int], table: Array) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Heatmap(
            z=table,
            x=list(MONTHS),
            y=[str(y) for y in years],
            colorscale="RdYlGn",
            zmid=0,
            texttemplate="%{z:.1%}",
            hovertemplate="%{y} %{x}: %{z:.2%}<extra></extra>",
            colorbar={"tickformat": ".0%"},
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(height=140 + 28 * len(years), margin={"t": 20, "b": 30})
    return fig


def _html_exposure(industries: list[str], wide: pl.DataFrame) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    # one heatmap trace over every date: every day kept, however many industries
    z = wide.select(industries).to_numpy().T.astype(np.float64)
    mean = np.asarray(wide.select(pl.col(industries).mean()).row(0), dtype=np.float64)
    fig = make_subplots(
        rows=1, cols=2, shared_yaxes=True, column_widths=[0.8, 0.2], horizontal_spacing=0.02,
        subplot_titles=("Active weight by day", "Mean"),
    )  # fmt: skip
    limit, _ = _color_limit(z, _CLIP)
    fig.add_trace(
        go.Heatmap(
            z=z, x=wide["date"].to_numpy(), y=industries, colorscale="RdBu", zmid=0,
            zmin=-limit, zmax=limit,
            colorbar={"tickformat": ".1%", "title": {"text": "active"}},
            hovertemplate="%{y}, %{x}: %{z:.2%}<extra></extra>",
        ),
        row=1,
        col=1,
    )  # fmt: skip
    fig.add_trace(
        go.Bar(
            x=mean, y=industries, orientation="h", showlegend=False,
            marker_color=np.where(mean >= 0, "#2166ac", "#b2182b"),
            hovertemplate="%{y}: %{x:.2%}<extra></extra>",
        ),
        row=1,
        col=2,
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(tickformat=".1%", row=1, col=2)
    fig.update_layout(height=160 + 22 * len(industries), margin={"t": 40, "b": 30, "l": 140})
    return fig


def _html_ic(ic: pl.DataFrame) -> Any:
    import plotly.graph_objects as go

    dates = ic["date"].to_numpy()
    fig = go.Figure()
    fig.add_trace(
        go.Bar(x=dates, y=ic["rank_ic"].to_numpy(), name="daily Rank IC", marker_color="#9ab")
    )
    fig.add_trace(
        go.Scatter(
            x=dates, y=ic["rank_ic_mean"].to_numpy(), name=f"Rank IC, {_SMOOTH}-day mean",
            mode="lines", line={"color": "#135"},
        )
    )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=dates, y=ic["ic_mean"].to_numpy(), name=f"IC, {_SMOOTH}-day mean", mode="lines",
            line={"color": "#e67e22", "dash": "dot"},
        )
    )  # fmt: skip
    fig.update_layout(height=360, margin={"t": 20, "b": 30}, legend={"orientation": "h"}, bargap=0)
    return fig


def _html_quantiles(dates: Dates, curves: dict[str, Array], means: dict[str, float]) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, column_widths=[0.75, 0.25], horizontal_spacing=0.08,
        subplot_titles=("Cumulative return", "Mean daily return"),
    )  # fmt: skip
    for name, curve in curves.items():
        line = {"color": "black", "dash": "dash"} if name == "long-short" else None
        fig.add_trace(go.Scatter(x=dates, y=curve, name=name, mode="lines", line=line), 1, 1)
    fig.add_trace(
        go.Bar(x=list(means), y=list(means.values()), showlegend=False, marker_color="#9ab"),
        row=1,
        col=2,
    )
    fig.update_yaxes(tickformat=".0%", row=1, col=1)
    fig.update_yaxes(tickformat=".2%", row=1, col=2)
    fig.update_layout(height=400, margin={"t": 40, "b": 30}, legend={"orientation": "h"})
    return fig


# -- PNG -----------------------------------------------------------------------------------------


def _figure(
    width: float,
    height: float,
    *,
    left: float = 0.8,
    right: float = 0.25,
    top: float = 0.4,
    bottom: float = 0.45,
) -> Figure:
    """A figure on its own Agg canvas with margins in inches. Fixed margins, not constrained
    layout: that measures every label twice and took 40% of the report's time."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(
        left=left / width,
        right=1.0 - right / width,
        top=1.0 - top / height,
        bottom=bottom / height,
    )
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=_DPI)
    return path


def _pct_axis(ax: Any, decimals: int = 0) -> None:
    from matplotlib.ticker import PercentFormatter

    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=decimals))
    ax.grid(True, alpha=0.3)


def _png_cumulative(c: _Curves, path: Path) -> Path:
    fig = _figure(10, 4.5)
    ax = fig.subplots()
    styles = {"strategy, net": "#1f77b4", "strategy, gross": "#aec7e8", "benchmark": "#7f7f7f"}
    for name, curve in c.wealth.items():
        ax.plot(c.dates, curve, label=name, color=styles[name], linewidth=1.2)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title("Cumulative return")
    ax.legend(loc="upper left")
    _pct_axis(ax)
    return _save(fig, path)


def _png_drawdown(c: _Curves, path: Path) -> Path:
    fig = _figure(10, 3)
    ax = fig.subplots()
    ax.fill_between(c.dates, c.drawdown, 0.0, color="#c0392b", alpha=0.5, linewidth=0)
    ax.plot(c.dates, c.drawdown, color="#c0392b", linewidth=0.8)
    ax.set_title(f"Drawdown, net (worst {np.min(c.drawdown, initial=0.0):.1%})")
    _pct_axis(ax)
    return _save(fig, path)


def _png_turnover(c: _Curves, path: Path) -> Path:
    fig = _figure(10, 3)
    ax = fig.subplots()
    # one line collection, not one bar patch per day
    ax.vlines(c.dates, 0.0, c.turnover, color="#9ab", linewidth=1.0, label="daily")
    ax.plot(c.dates, c.turnover_mean, color="#135", linewidth=1.2, label=f"{_SMOOTH}-day mean")
    ax.set_title(f"Daily turnover (mean {np.nanmean(c.turnover) if c.turnover.size else 0:.1%})")
    ax.legend(loc="upper right")
    ax.set_ylim(bottom=0)
    _pct_axis(ax)
    return _save(fig, path)


def _heatmap(fig: Figure, ax: Any, z: Array, cmap: str, fmt: str, *, clip: float = 100.0) -> Any:
    """``z`` as an image on a color scale centred on zero, symmetric up to the ``clip``
    percentile of its absolute values (beyond it the colorbar's arrows say so), NaN blank."""
    from matplotlib.colors import TwoSlopeNorm

    limit, clipped = _color_limit(z, clip)
    image = ax.imshow(
        np.ma.masked_invalid(z), cmap=cmap, norm=TwoSlopeNorm(0.0, -limit, limit),
        aspect="auto", interpolation="nearest",
    )  # fmt: skip
    fig.colorbar(image, ax=ax, format=fmt, fraction=0.03, pad=0.02,
                 extend="both" if clipped else "neither")  # fmt: skip
    return image


def _png_monthly(years: list[int], table: Array, path: Path) -> Path:
    fig = _figure(10, max(2.0, 1.2 + 0.42 * len(years)), left=0.6, right=0.75, bottom=0.35)
    ax = fig.subplots()
    image = _heatmap(fig, ax, table, "RdYlGn", "{x:.0%}")
    limit = image.norm.vmax
    for i, j in zip(*np.nonzero(np.isfinite(table)), strict=True):
        value = table[i, j]
        ax.text(j, i, f"{value:.1%}", ha="center", va="center", fontsize=8,
                color="white" if abs(value) > 0.6 * limit else "black")  # fmt: skip
    ax.set_xticks(range(12), MONTHS)
    ax.set_yticks(range(len(years)), [str(y) for y in years])
    ax.set_title("Monthly returns, net (compounded)")
    return _save(fig, path)


def _month_ticks(months: list[Any]) -> list[int]:
    """Positions of month labels: every 1, 3, 6, 12 or 24 months, whichever is the first
    to give at most 14 labels, on months that start such a period."""
    for step in (1, 3, 6, 12, 24, 60):
        ticks = [i for i, m in enumerate(months) if (m.year * 12 + m.month - 1) % step == 0]
        if len(ticks) <= 14:
            return ticks or [0]
    return [0]


def _png_exposure(industries: list[str], wide: pl.DataFrame, path: Path) -> Path:
    # month by industry: a day per pixel would be finer than the image
    monthly = (
        wide.with_columns(pl.col("date").dt.truncate("1mo").alias("month"))
        .group_by("month")
        .agg(pl.col(industries).mean())
        .sort("month")
    )
    z = monthly.select(industries).to_numpy().T.astype(np.float64)
    months = monthly["month"].to_list()
    label = max((len(name) for name in industries), default=1)
    fig = _figure(
        11, 1.6 + 0.26 * len(industries), left=0.2 + 0.065 * label, right=0.8, bottom=0.75
    )
    ax = fig.subplots()
    # a month or two of extreme bets should not wash out the rest of the picture
    _heatmap(fig, ax, z, "RdBu", "{x:.1%}", clip=_CLIP)
    ax.set_yticks(range(len(industries)), industries, fontsize=8)
    ticks = _month_ticks(months)
    ax.set_xticks(ticks, [f"{months[t]:%Y-%m}" for t in ticks], rotation=30, ha="right")
    ax.set_title("Active industry weight (portfolio less benchmark), monthly mean; blue = over")
    return _save(fig, path)


def _png_ic(ic: pl.DataFrame, summary: dict[str, float], path: Path) -> Path:
    fig = _figure(10, 3.5)
    ax = fig.subplots()
    dates = ic["date"].to_numpy()
    rank_ic = ic["rank_ic"].fill_null(np.nan).to_numpy()
    ax.vlines(dates, 0.0, rank_ic, color="#9ab", linewidth=1.0, label="daily Rank IC")
    ax.plot(dates, ic["rank_ic_mean"].fill_null(np.nan).to_numpy(), color="#135",
            linewidth=1.2, label=f"{_SMOOTH}-day mean")  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(
        f"Rank IC: mean {_fmt(summary.get('rank_ic'), 'num')}, "
        f"ICIR {_fmt(summary.get('rank_icir'), 'num')}"
    )
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _png_quantiles(dates: Dates, curves: dict[str, Array], path: Path) -> Path:
    from matplotlib import colormaps

    fig = _figure(10, 4.5, right=2.4)
    ax = fig.subplots()
    groups = [name for name in curves if name != "long-short"]
    cmap = colormaps["viridis"]
    for k, name in enumerate(groups):
        color = cmap(k / max(1, len(groups) - 1))
        ax.plot(dates, curves[name], color=color, linewidth=1.1, label=name)
    ax.plot(dates, curves["long-short"], color="black", linestyle="--", linewidth=1.3,
            label="long-short (top less bottom)")  # fmt: skip
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title("Quantile groups by score: cumulative return")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    _pct_axis(ax)
    return _save(fig, path)


# -- the report ----------------------------------------------------------------------------------


def write_report(result: BacktestResult, path: Path, *, png: bool = False) -> list[Path]:
    """Write the HTML report at ``path`` and, with ``png``, PNGs of its main charts in the
    same folder (matplotlib: a second chart library, imported and paid for only then).

    Parameters
    ----------
    result
        The backtest. ``exposure``, ``signal`` and ``decisions`` each add their section (and
        PNG) when present.
    path
        The HTML file to write; the PNGs go to ``path.parent``.
    png
        Also draw the PNGs.

    Returns
    -------
    list[Path]
        The files written: the HTML first, then, with ``png``, cumulative.png, drawdown.png,
        monthly_returns.png, turnover.png, and, with their inputs, industry_exposure.png,
        ic.png and quantile_returns.png.
    """
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    curves = _curves(result.returns)
    years, table = monthly_table(result.returns)
    plot = _Plotly()
    written: list[Path] = []

    span = result.returns["date"]
    first, last = html.escape(str(span.min())), html.escape(str(span.max()))
    sections = [f"<h1>Backtest, {first} to {last}</h1>"]
    sections += [f"<p class='warning'>{html.escape(w)}</p>" for w in result.warnings]
    sections += [f"<p class='note'>Note: {html.escape(n)}.</p>" for n in result.notes]
    if result.decisions is not None and result.decisions.height:
        n_fallback = _fallbacks(result.decisions).height
        if n_fallback:
            sections.append(
                f"<p class='warning'>{n_fallback:,} of {result.decisions.height:,} optimizer "
                "rebalances did not solve as posed and took a fallback: see "
                "<a href='#decisions'>Optimizer decisions</a>.</p>"
            )
    year = (
        f"{result.metrics['periods_per_year']:,.0f} bars a year: 252 sessions of intraday bars"
        if result.metrics.get("frequency") == "intraday"
        else "252 days a year"
    )
    sections.append(
        _section(
            "Performance",
            "Figures over the rows of returns.parquet, a day (or an intraday bar) each: from "
            "the first trading day (the market day after the first signal date, whose scores "
            "trade then) to the last; a day in cash counts as a 0% day. Net is after trading "
            f"costs. empyrical's definitions ({year}, no risk-free rate) on that file's "
            "return_net give these figures.",
            _metrics_table(result.metrics),
        )
    )
    sections.append(
        _section(
            "Trading",
            "What the strategy could do: days that ended without any holding, orders filled "
            "and blocked (orders.parquet lists each), and how much of the signal fell on an "
            "instrument and market day of the store.",
            _trading_table(result.metrics),
        )
    )
    sections.append(
        _section(
            "Cumulative return, drawdown and turnover",
            "Compounded daily return of the strategy (net and gross of costs) and of the "
            "equal-weighted benchmark; the net curve's fall from its running peak; traded value "
            "over portfolio value each day.",
            plot(_html_performance(curves)),
        )
    )
    sections.append(
        _section(
            "Monthly returns",
            "Net daily returns compounded within each calendar month.",
            plot(_html_monthly(years, table)),
        )
    )
    if png:
        written += [
            _png_cumulative(curves, folder / "cumulative.png"),
            _png_drawdown(curves, folder / "drawdown.png"),
            _png_monthly(years, table, folder / "monthly_returns.png"),
            _png_turnover(curves, folder / "turnover.png"),
        ]

    if result.exposure is not None and result.exposure.height:
        industries, wide = exposure_grid(result.exposure)
        sections.append(
            _section(
                "Industry exposure",
                "Active weight = portfolio less benchmark, per industry, at each close; "
                "industries ordered by their mean active weight (blue over, red under; colors "
                f"saturate at the {_CLIP:g}th percentile of its size, hover for the values).",
                plot(_html_exposure(industries, wide)),
            )
        )
        if png:
            written.append(_png_exposure(industries, wide, folder / "industry_exposure.png"))

    if result.signal is not None:
        signal = result.signal
        ic = _ic_series(signal)
        sections.append(
            _section(
                "Signal: information coefficient",
                "Cross-sectional correlation of each day's score with the return it earns "
                "(Rank IC: of their ranks); bars per day, lines the "
                f"{_SMOOTH}-day means.",
                _signal_table(signal.summary, signal.as_dict()["long_short_mean"]),
                plot(_html_ic(ic)),
            )
        )
        q_dates, q_curves, q_means = _quantile_curves(signal)
        sections.append(
            _section(
                "Signal: quantile returns",
                "Instruments cut each day into equal-count groups by score (group 1 lowest); "
                "each group's mean return compounded, and the top group less the bottom one, "
                "plotted at the score's date.",
                plot(_html_quantiles(q_dates, q_curves, q_means)),
            )
        )
        if png:
            written.append(_png_ic(ic, signal.summary, folder / "ic.png"))
            written.append(_png_quantiles(q_dates, q_curves, folder / "quantile_returns.png"))

    if result.decisions is not None:
        sections.append(
            "<div id='decisions'>"
            + _section(
                "Optimizer decisions",
                "Each rebalance's outcome: optimal, or the fallback the optimizer took "
                "(a relaxed constraint, or the book held) and why.",
                _decisions_html(result.decisions),
            )
            + "</div>"
        )

    page = "\n".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>Quarry backtest {first} to {last}</title>",
            f"<style>{_STYLE}</style></head><body>",
            *sections,
            "</body></html>",
        ]
    )
    path.write_text(page, encoding="utf-8")
    return [path, *written]
