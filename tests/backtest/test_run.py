"""A backtest from a store and a signal to its files, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import empyrical
import numpy as np
import pandas as pd
import polars as pl
import pytest

from quarry.backtest._run import equal_weight_benchmark, run_backtest
from quarry.data import Store, generate, read_bars
from tests.cli.helpers import run


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Path]:
    root = tmp_path_factory.mktemp("run")
    store = Store(root / "store")
    generate(store, 40, 260, seed=8, alpha_ic=0.1)
    bars = read_bars(store, ["close"], adjust="adjusted")
    # The planted alpha: minus the 5-day return, known at the close of the day.
    signal = bars.with_columns(
        score=-(pl.col("close") / pl.col("close").shift(5).over("instrument") - 1)
    ).drop("close")
    path = root / "signal.parquet"
    signal.write_parquet(path)
    return store, path


def test_files_and_metrics_agree_with_empyrical(market: tuple[Store, Path], tmp_path: Path) -> None:
    store, path = market
    out = tmp_path / "bt"
    result = run_backtest(store, pl.read_parquet(path), out, topk=8, n_drop=2)
    for name in ("metrics.json", "returns.parquet", "positions.parquet", "orders.parquet",
                 "report.html"):  # fmt: skip
        assert (out / name).exists(), name
    returns = pl.read_parquet(out / "returns.parquet")
    assert returns.columns[:5] == ["date", "return_gross", "return_net", "benchmark", "turnover"]
    net = pd.Series(returns["return_net"].to_numpy()[1:])
    bench = pd.Series(returns["benchmark"].to_numpy()[1:])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["annualized_return"] == pytest.approx(empyrical.annual_return(net))
    assert metrics["sharpe"] == pytest.approx(empyrical.sharpe_ratio(net))
    assert metrics["max_drawdown"] == pytest.approx(empyrical.max_drawdown(net))
    assert metrics["gross"]["annualized_return"] > metrics["annualized_return"]  # costs
    ir = empyrical.excess_sharpe(net, bench) * np.sqrt(252)
    assert metrics["information_ratio"] == pytest.approx(ir)
    # The book holds topk names once built, and the planted alpha earns its keep.
    held = pl.read_parquet(out / "positions.parquet").group_by("date").len()["len"]
    assert held.max() >= 8
    assert metrics["excess_annualized_return"] > 0
    assert result.orders.filter(pl.col("status") == "filled").height > 0


def test_the_benchmark_is_the_equal_weighted_universe() -> None:
    close = np.array([[10.0, 20.0, np.nan], [11.0, 18.0, 5.0], [11.0, np.nan, 6.0]])
    got = equal_weight_benchmark(close)
    # day 1: (+10% and -10%) / 2; day 2: the second has no bar, (0% and +20%) / 2
    np.testing.assert_allclose(got, [0.0, 0.0, 0.1], atol=1e-15)


def test_the_command_writes_the_contract(market: tuple[Store, Path], tmp_path: Path) -> None:
    store, path = market
    out = tmp_path / "cli"
    code, stdout, err = run(
        "backtest", "--store", str(store.location), "--signal", str(path), "--topk", "8",
        "--n-drop", "2", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "annualized return" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    keys = {"annualized_return", "annualized_volatility", "sharpe", "max_drawdown",
            "excess_annualized_return", "information_ratio", "turnover"}  # fmt: skip
    assert keys <= set(metrics) and keys <= set(metrics["gross"])
    code, _, err = run("backtest", "--store", str(store.location), "--signal", str(path),
                       "--strategy", "optimiser", "--out", str(out))  # fmt: skip
    assert code == 1 and "--strategy" in err and "Traceback" not in err


@pytest.mark.parametrize("strategy", ["long-short", "score-weighted"])
def test_weight_strategies_run_end_to_end(
    market: tuple[Store, Path], tmp_path: Path, strategy: str
) -> None:
    store, path = market
    result = run_backtest(store, pl.read_parquet(path), tmp_path / strategy, strategy=strategy)
    net = pd.Series(result.returns["return_net"].to_numpy()[1:])
    assert result.metrics["annualized_return"] == pytest.approx(empyrical.annual_return(net))
    weights = result.positions.group_by("date").agg(
        pl.col("weight").sum().alias("net"), pl.col("weight").abs().sum().alias("gross")
    )
    if strategy == "long-short":  # dollar-neutral but for whole shares and blocked orders
        assert weights["net"].abs().median() < 0.01
        assert result.positions["shares"].min() < 0
    else:
        assert result.positions["shares"].min() > 0
    # trades aim at 95% gross (the risk degree); prices move the book after the trades
    assert weights["gross"].median() == pytest.approx(0.95, abs=0.02)
