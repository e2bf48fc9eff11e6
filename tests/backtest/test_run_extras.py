"""A backtest's benchmark from a stored index, industry exposure, the signal's analysis and
the optimizer strategy, each against an independent computation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from scipy.stats import spearmanr

from quarry.backtest._run import run_backtest
from quarry.data import Store, generate, industries, ingest_frame, read_bars, table_spec
from quarry.exceptions import UsageError
from tests.cli.helpers import run


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, pl.DataFrame]:
    root = tmp_path_factory.mktemp("extras")
    store = Store(root / "store")
    generate(store, 40, 200, seed=3, alpha_ic=0.1)
    bars = read_bars(store, ["close"], adjust="adjusted")
    signal = bars.with_columns(
        score=-(pl.col("close") / pl.col("close").shift(5).over("instrument") - 1)
    ).drop("close")
    return store, signal


def test_the_benchmark_is_the_stored_index(
    market: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    store, signal = market
    copy = Store(tmp_path / "store")
    shutil.copytree(str(store.location), str(copy.location))
    dates = read_bars(store, ["close"])["date"].unique().sort()
    rng = np.random.default_rng(1)
    level = 100 * np.cumprod(1 + rng.normal(0, 0.01, dates.len()))
    index = pl.DataFrame({"instrument": "IDX", "date": dates, "close": level})
    index = index.filter(pl.int_range(pl.len()) % 17 != 5)  # a few days the index is missing
    index = index.with_columns(
        open=pl.col("close"), high=pl.col("close"), low=pl.col("close"), volume=pl.lit(1.0)
    )
    ingest_frame(copy, table_spec("bars"), index)
    result = run_backtest(copy, signal, None, topk=5, n_drop=1, benchmark="IDX",
                          analyze_signal=False)  # fmt: skip
    # independent: the level on the backtest's days (from the signal's first, whose return
    # is not a trading day's), carried over missing days, pct_change
    grid = pd.Index(dates.filter(dates >= signal["date"].min()).to_pandas())
    series = pd.Series(index["close"].to_numpy(), index=index["date"].to_pandas())
    expected = series.reindex(grid).ffill().pct_change().to_numpy()[1:]
    assert result.returns["date"].to_list() == list(grid[1:].date)
    np.testing.assert_allclose(result.returns["benchmark"].to_numpy(), expected, atol=1e-12)
    assert "IDX" not in result.positions["instrument"].to_list()  # no score: never held
    with pytest.raises(UsageError, match="--benchmark NOPE"):
        run_backtest(copy, signal, None, benchmark="NOPE", analyze_signal=False)


def test_industry_exposure_is_the_positions_summed_by_industry(
    market: tuple[Store, pl.DataFrame],
) -> None:
    store, signal = market
    result = run_backtest(store, signal, None, topk=6, n_drop=2, analyze_signal=False)
    assert result.exposure is not None
    table = industries(store)
    # independent: each position joined with the classification valid on its date
    joined = (
        result.positions.join(table, on="instrument")
        .filter(
            (pl.col("date") >= pl.col("valid_from"))
            & (pl.col("valid_to").is_null() | (pl.col("date") <= pl.col("valid_to")))
        )
        .group_by("date", "industry")
        .agg(pl.col("weight").sum().alias("expected"))
    )
    got = result.exposure.join(joined, on=["date", "industry"], how="left").with_columns(
        pl.col("expected").fill_null(0.0)
    )
    np.testing.assert_allclose(got["portfolio"], got["expected"], atol=1e-12)
    assert got["expected"].abs().sum() > 1  # the book was in some industry most days
    # the equal-weighted benchmark's industry weights sum to 1 on each day
    total = result.exposure.group_by("date").agg(pl.col("benchmark").sum())
    np.testing.assert_allclose(total["benchmark"], 1.0, atol=1e-12)


def test_the_signal_is_measured_against_what_it_earns_when_traded(
    market: tuple[Store, pl.DataFrame],
) -> None:
    store, signal = market
    result = run_backtest(store, signal, None, topk=6, n_drop=2)
    assert result.signal is not None
    close = read_bars(store, ["close"], adjust="adjusted").to_pandas()
    wide = close.pivot(index="date", columns="instrument", values="close").sort_index()
    earned = wide.shift(-2) / wide.shift(-1) - 1  # a score of day t trades at t+1's close
    scores = signal.to_pandas().pivot(index="date", columns="instrument", values="score")
    daily = result.signal.daily_ic.to_pandas().set_index("date")
    for day in list(wide.index[10:190:45]):
        s, e = scores.loc[day], earned.loc[day]
        ok = s.notna() & e.notna()
        expected = spearmanr(s[ok], e[ok]).statistic
        assert daily.loc[day, "rank_ic"] == pytest.approx(expected, abs=1e-12)
    assert "rank_ic" in result.metrics["signal"]


@pytest.mark.slow
def test_the_optimizer_strategy_keeps_its_limits(
    market: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    from quarry.portfolio import OptimizerConfig

    store, signal = market
    settings = OptimizerConfig(max_weight=0.1, industry_bound=None, lookback=40,
                               rebalance_every=10)  # fmt: skip
    result = run_backtest(store, signal, tmp_path / "opt", strategy="optimizer",
                          optimizer=settings)  # fmt: skip
    assert result.decisions is not None and result.decisions.height > 10
    assert set(result.decisions["status"]) <= {"optimal", "relaxed-turnover",
                                                "relaxed-industry", "held"}  # fmt: skip
    counts = result.metrics["optimizer"]
    assert counts["rebalances"] == result.decisions.height
    # long-only, at most 10% of the book per name at the trade (times the 95% risk degree),
    # plus one day's price move before the close it is measured at
    assert result.positions["shares"].min() > 0
    assert result.positions["weight"].max() <= 0.1 * 0.95 * 1.25
    book = result.positions.group_by("date").agg(pl.col("weight").sum())
    assert book["weight"].median() == pytest.approx(0.95, abs=0.03)


@pytest.mark.slow
def test_the_command_runs_the_optimizer(market: tuple[Store, pl.DataFrame], tmp_path: Path) -> None:
    store, signal = market
    path = tmp_path / "signal.parquet"
    signal.write_parquet(path)
    out = tmp_path / "cli"
    code, _, err = run(
        "backtest", "--store", str(store.location), "--signal", str(path), "--strategy",
        "optimizer", "--rebalance-every", "20", "--lookback", "40", "--max-weight", "0.2",
        "--slippage", "0.001", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert (out / "report.html").exists() and (out / "cumulative.png").exists()
    orders = pl.read_parquet(out / "orders.parquet")
    filled = orders.filter(pl.col("status") == "filled")
    np.testing.assert_allclose(filled["slippage"], filled["value"].abs() * 0.001, rtol=1e-12)
    code, _, err = run(
        "backtest", "--store", str(store.location), "--signal", str(path), "--strategy",
        "optimizer", "--max-weight", "0", "--out", str(out),
    )  # fmt: skip
    assert code == 1 and "--max-weight" in err and "Traceback" not in err


def test_a_suspended_holding_keeps_its_last_close() -> None:
    from quarry.backtest._run import last_close

    nan = np.nan
    close = np.array([[nan, 2.0], [1.0, nan], [nan, nan], [3.0, 4.0]])
    np.testing.assert_array_equal(
        last_close(close), [[0.0, 2.0], [1.0, 2.0], [1.0, 2.0], [3.0, 4.0]]
    )


def test_positions_and_cash_add_up_to_the_value_every_day(
    market: tuple[Store, pl.DataFrame],
) -> None:
    store, signal = market
    result = run_backtest(store, signal, None, topk=6, n_drop=2, analyze_signal=False)
    held = result.positions.group_by("date").agg(pl.col("value").sum())
    days = result.returns.join(held, on="date", how="left").with_columns(
        pl.col("value_right").fill_null(0.0)
    )
    total = days["value_right"] + days["cash"]
    np.testing.assert_allclose(total.to_numpy(), days["value"].to_numpy(), rtol=1e-9)


def test_the_optimizer_reads_the_history_before_the_first_signal(
    market: tuple[Store, pl.DataFrame],
) -> None:
    from quarry.portfolio import OptimizerConfig, optimize_weights

    store, signal = market
    dates = signal["date"].unique().sort()
    first = dates[120]
    late = signal.filter(pl.col("date") >= first)
    settings = OptimizerConfig(max_weight=0.1, industry_bound=None, lookback=40,
                               rebalance_every=20)  # fmt: skip
    result = run_backtest(store, late, None, strategy="optimizer", optimizer=settings,
                          analyze_signal=False)  # fmt: skip
    assert result.decisions is not None
    # the first rebalance is the first signal date's, and the book is built the next day
    assert result.decisions["date"][0] == first
    assert result.metrics["days_without_position"] == 0
    assert result.positions["date"].min() == dates[121] == result.returns["date"][0]
    # independent: the optimizer on the whole store's closes, scores from the first date on
    close = read_bars(store, ["close"], adjust="adjusted").to_pandas()
    wide = close.pivot(index="date", columns="instrument", values="close").sort_index()
    scores = late.to_pandas().pivot(index="date", columns="instrument", values="score")
    scores = scores.reindex(index=wide.index, columns=wide.columns)
    found = optimize_weights(scores.to_numpy(), wide.pct_change().to_numpy(), config=settings)
    target = pd.Series(found.weights[120], index=wide.columns)
    day = result.positions.filter(pl.col("date") == dates[121]).to_pandas()
    got = day.set_index("instrument")["weight"].reindex(wide.columns).fillna(0.0)
    # traded at the next close toward 95% of the book (the risk degree), less the costs
    np.testing.assert_allclose(got, target * 0.95, atol=1e-4)
    assert (target > 0).sum() >= 10
