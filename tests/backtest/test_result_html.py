"""A backtest's rich view: its tables are the result's own metrics, its charts the returns
compounded, each checked against an independent computation."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from quarry.backtest import BacktestResult, run_backtest, summary
from quarry.data import Store, generate, read_bars
from tests.html_parsing import assert_safe

# label -> (metrics key, how it is written), as a reader would check them
METRICS = {
    "Annualized return": ("annualized_return", "{:.2%}"),
    "Excess annualized return": ("excess_annualized_return", "{:.2%}"),
    "Sharpe": ("sharpe", "{:.3f}"),
    "Information ratio": ("information_ratio", "{:.3f}"),
    "Max drawdown": ("max_drawdown", "{:.2%}"),
    "Annualized volatility": ("annualized_volatility", "{:.2%}"),
    "Average daily turnover": ("turnover", "{:.2%}"),
    "Calmar": ("calmar", "{:.3f}"),
    "Hit rate": ("hit_rate", "{:.2%}"),
}


def _written(value: Any, fmt: str) -> str:
    return "n/a" if value is None or np.isnan(value) else fmt.format(value)


def _compounded(values: np.ndarray) -> np.ndarray:
    return np.cumprod(1.0 + np.nan_to_num(values, nan=0.0)) - 1.0


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> BacktestResult:
    """A TopK-Dropout backtest of the planted reversal on a small generated market."""
    store = Store(tmp_path_factory.mktemp("view") / "store")
    generate(store, 40, 260, seed=8, alpha_ic=0.1)
    bars = read_bars(store, ["close"], adjust="adjusted")
    signal = bars.with_columns(
        score=-(pl.col("close") / pl.col("close").shift(5).over("instrument") - 1)
    ).drop("close")
    return run_backtest(store, signal, None, topk=8, n_drop=2)


def test_the_tables_are_the_results_metrics(result: BacktestResult) -> None:
    view = assert_safe(result._repr_html_())
    m = result.metrics
    first, last = result.returns["date"].min(), result.returns["date"].max()
    assert view.title == f"Backtest, {first} to {last}"
    metrics = view.table("metrics")
    assert metrics.header == ["", "net of costs", "gross"]
    assert metrics.column("net of costs") == {
        label: _written(m[key], fmt) for label, (key, fmt) in METRICS.items()
    }
    assert metrics.column("gross") == {
        label: _written(m["gross"][key], fmt) for label, (key, fmt) in METRICS.items()
    }
    trading = view.table("trading").pairs()
    assert trading["Days of returns"] == f"{result.returns.height:,}"
    filled = result.orders.filter(pl.col("status") == "filled").height
    assert trading["Orders filled"] == f"{filled:,}" and filled > 100
    signal = view.table("signal").pairs()
    assert signal["Mean Rank IC"] == f"{m['signal']['rank_ic']:.4f}"
    assert signal["ICIR"] == f"{m['signal']['icir']:.3f}"
    assert view.lists.get("quarry-notes") == list(result.notes)
    assert "quarry-warnings" not in view.lists  # none, so no empty list


def test_the_charts_are_the_returns_compounded(result: BacktestResult) -> None:
    view = assert_safe(result._repr_html_())
    r = result.returns
    days = [d.isoformat() for d in r["date"]]
    cumulative = view.chart("Cumulative return")
    assert list(cumulative.lines) == ["strategy, net", "benchmark"]
    net = _compounded(r["return_net"].to_numpy())
    for name, expected in (("strategy, net", net),
                           ("benchmark", _compounded(r["benchmark"].to_numpy()))):  # fmt: skip
        line = cumulative.lines[name]
        assert line.dates == days
        np.testing.assert_allclose(line.values, expected, rtol=1e-12, atol=1e-15)
    # 1 + the final cumulative return is the growth the annualized return compounds
    growth = (1.0 + net[-1]) ** (252 / len(net)) - 1.0
    assert growth == pytest.approx(result.metrics["annualized_return"], rel=1e-9)
    drawdown = view.chart("Drawdown").lines["drawdown, net"]
    wealth = np.concatenate(([1.0], 1.0 + net))
    expected = (wealth / np.maximum.accumulate(wealth) - 1.0)[1:]
    np.testing.assert_allclose(drawdown.values, expected, rtol=1e-12, atol=1e-15)
    worst = result.metrics["max_drawdown"]
    assert drawdown.values.min() == pytest.approx(worst, rel=1e-12) and worst < -0.01
    assert view.chart("Drawdown").title == f"Drawdown, net (worst {worst:.1%})"


def _result(dates: list[Any], net: np.ndarray, bench: np.ndarray, **extra: Any) -> BacktestResult:
    metrics: dict[str, Any] = dict(summary(net, net, bench, np.full(net.size, 0.1)))
    metrics.update(extra)
    returns = pl.DataFrame(
        {"date": dates, "return_gross": net, "return_net": net, "benchmark": bench}
    )
    empty = pl.DataFrame()
    return BacktestResult(metrics, returns, empty, empty, warnings=("a <b>bad</b> day & more",))


def test_a_missing_return_is_a_flat_day_and_warnings_are_escaped() -> None:
    days = [date(2021, 3, 1) + timedelta(days=k) for k in range(6)]
    net = np.array([0.01, np.nan, -0.02, 0.03, np.nan, 0.01])
    bench = np.array([0.0, 0.01, 0.01, np.nan, 0.0, 0.0])
    result = _result(days, net, bench)
    html = result._repr_html_()
    assert "<b>" not in html
    view = assert_safe(html)
    assert view.lists["quarry-warnings"] == ["a <b>bad</b> day & more"]
    line = view.chart("Cumulative return").lines["strategy, net"]
    expected = np.cumprod(1.0 + np.array([0.01, 0.0, -0.02, 0.03, 0.0, 0.01])) - 1.0
    np.testing.assert_allclose(line.values, expected, rtol=1e-12)
    assert line.dates == [d.isoformat() for d in days]
    assert view.table("metrics").column("gross")["Sharpe"] == f"{result.metrics['sharpe']:.3f}"


def test_intraday_bars_are_drawn_a_day_each() -> None:
    bars = [datetime(2022, 5, d, h) for d in (2, 3, 4) for h in (10, 11, 12, 13)]
    rng = np.random.default_rng(3)
    net, bench = rng.normal(0, 0.01, 12), rng.normal(0, 0.01, 12)
    result = _result(bars, net, bench, frequency="intraday")
    view = assert_safe(result._repr_html_())
    wealth = 1.0 + _compounded(net)
    drawdown = wealth / np.maximum(np.maximum.accumulate(wealth), 1.0) - 1.0
    cumulative = view.chart("Cumulative return").lines["strategy, net"]
    assert cumulative.dates == ["2022-05-02", "2022-05-03", "2022-05-04"]
    np.testing.assert_allclose(cumulative.values, wealth[3::4] - 1.0, rtol=1e-12)  # day's last
    worst = view.chart("Drawdown").lines["drawdown, net"].values
    np.testing.assert_allclose(worst, drawdown.reshape(3, 4).min(axis=1), rtol=1e-12)
    assert "12 bars of returns" in view.paragraphs["quarry-caption"][0]


def test_a_result_without_gross_or_rows_still_shows() -> None:
    metrics = {"annualized_return": float("nan"), "sharpe": None, "days": 0}
    returns = pl.DataFrame(
        schema={
            "date": pl.Date,
            "return_gross": pl.Float64,
            "return_net": pl.Float64,
            "benchmark": pl.Float64,
        }
    )
    result = BacktestResult(metrics, returns, pl.DataFrame(), pl.DataFrame())
    view = assert_safe(result._repr_html_())
    assert view.title == "Backtest" and not view.charts
    table = view.table("metrics")
    assert table.header == ["", "net of costs"]
    assert table.pairs()["Annualized return"] == "n/a" and table.pairs()["Sharpe"] == "n/a"
