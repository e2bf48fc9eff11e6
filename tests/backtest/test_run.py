"""A backtest from a store and a signal to its files, and the command line: its benchmark (equal
weights or a stored index), industry exposure, the signal's analysis and the optimizer strategy,
each against an independent computation."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import empyrical
import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from scipy.stats import spearmanr

from quarry.backtest import BacktestConfig, run_backtest
from quarry.backtest._run import equal_weight_benchmark
from quarry.data import Store, generate, industries, ingest_frame, read_bars, table_spec
from quarry.exceptions import UsageError
from tests.cli.helpers import run
from tests.helpers import bars_frame


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
    signal = pl.read_parquet(path)
    result = run_backtest(store, signal, out, topk=8, n_drop=2)
    for name in ("metrics.json", "returns.parquet", "positions.parquet", "orders.parquet",
                 "report.html"):  # fmt: skip
        assert (out / name).exists(), name
    returns = pl.read_parquet(out / "returns.parquet")
    assert returns.columns[:5] == ["date", "return_gross", "return_net", "benchmark", "turnover"]
    # Every row of the file counts, and only those: a user recomputing the metrics from it
    # with empyrical gets metrics.json's figures.
    net = pd.Series(returns["return_net"].to_numpy())
    gross = pd.Series(returns["return_gross"].to_numpy())
    bench = pd.Series(returns["benchmark"].to_numpy())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["annualized_return"] == pytest.approx(empyrical.annual_return(net), rel=1e-12)
    assert metrics["sharpe"] == pytest.approx(empyrical.sharpe_ratio(net), rel=1e-12)
    assert metrics["max_drawdown"] == pytest.approx(empyrical.max_drawdown(net), rel=1e-12)
    assert metrics["gross"]["sharpe"] == pytest.approx(empyrical.sharpe_ratio(gross), rel=1e-12)
    assert metrics["gross"]["annualized_return"] > metrics["annualized_return"]  # costs
    ir = empyrical.excess_sharpe(net, bench) * np.sqrt(252)
    assert metrics["information_ratio"] == pytest.approx(ir, rel=1e-12)
    # the days: from the market day after the first signal date to the store's last one
    calendar = read_bars(store, ["close"])["date"].unique().sort()
    after = calendar.filter(calendar > signal["date"].min())
    assert returns["date"].to_list() == after.to_list()
    assert metrics["days"] == returns.height
    assert result.returns["date"].to_list() == after.to_list()
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


@pytest.mark.parametrize("rows_per_block", [1, 3, 1000])
def test_the_benchmark_by_blocks_of_days_is_pandas_mean_of_moves(
    monkeypatch: pytest.MonkeyPatch, rows_per_block: int
) -> None:
    import pandas as pd

    rng = np.random.default_rng(3)
    close = 10.0 * np.exp(np.cumsum(rng.normal(0, 0.02, (40, 7)), axis=0))
    close[rng.random(close.shape) < 0.2] = np.nan
    close[5] = np.nan  # a day without any bar
    monkeypatch.setattr("quarry._memory.BLOCK_CELLS", 7 * rows_per_block)
    got = equal_weight_benchmark(close)
    frame = pd.DataFrame(close)
    moves = frame / frame.shift(1) - 1.0  # NaN unless both days have a bar
    expected = moves.mean(axis=1).fillna(0.0).to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-15)


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
    net = pd.Series(result.returns["return_net"].to_numpy())
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


# -- what the figures rest on: the signal's match, the market's fields, what was traded -------


@pytest.fixture(scope="module")
def closes_only(
    market: tuple[Store, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Store, Store, Store]:
    """The market's raw bars three ways: closes only (as ``quarry data sample sp500`` makes
    them), closes with a volume on every day with a price (so nothing is ever suspended),
    and closes with a volume of 0 every day (so everything is)."""
    store, _ = market
    bars = read_bars(store, ["close"])
    root = tmp_path_factory.mktemp("fields")
    out = []
    for name, volume in (("closes", None), ("traded", 1e6), ("halted", 0.0)):
        s = Store(root / name)
        frame = bars.with_columns(
            open=pl.lit(None, pl.Float64), high=pl.col("close"), low=pl.col("close"),
            volume=pl.lit(volume, pl.Float64),
        )  # fmt: skip
        ingest_frame(s, table_spec("bars"), frame)
        out.append(s)
    return out[0], out[1], out[2]


def test_a_store_without_volume_trades_on_its_prices(
    market: tuple[Store, Path], closes_only: tuple[Store, Store, Store]
) -> None:
    _, path = market
    closes, traded, _ = closes_only
    signal = pl.read_parquet(path)
    got = run_backtest(closes, signal, None, topk=8, n_drop=2, analyze_signal=False)
    # unknown volume is not zero volume: the same as a store whose every priced day traded
    expected = run_backtest(traded, signal, None, topk=8, n_drop=2, analyze_signal=False)
    assert_frame_equal(got.returns, expected.returns)
    assert_frame_equal(got.orders, expected.orders)
    assert got.metrics["orders_filled"] > 100
    assert "suspended" not in got.orders["status"].to_list()
    assert got.metrics["notes"][0] == (
        "no volume in the store over the backtest's days: a day is tradable when it has a close "
        "price (suspension decided by the price alone); --impact needs volume"
    )
    assert got.notes == tuple(got.metrics["notes"]) and got.notes[1:] == expected.notes
    with pytest.raises(UsageError, match=r"^--impact 0\.1 needs each day's volume, and .* has "
                       r"none for 40 of the 40 instruments the signal scores"):  # fmt: skip
        run_backtest(closes, signal, None, config=BacktestConfig(impact=0.1))
    with pytest.raises(UsageError, match=r"^--deal-price open: .* has no open prices over the "
                       r"backtest's days, only closes; use --deal-price close$"):  # fmt: skip
        run_backtest(closes, signal, None, deal_price="open")


def test_a_backtest_that_never_traded_says_so(
    market: tuple[Store, Path], closes_only: tuple[Store, Store, Store], tmp_path: Path
) -> None:
    _, path = market
    _, _, halted = closes_only
    result = run_backtest(halted, pl.read_parquet(path), tmp_path / "bt", topk=8, n_drop=2,
                          analyze_signal=False)  # fmt: skip
    metrics = json.loads((tmp_path / "bt" / "metrics.json").read_text())
    orders = pl.read_parquet(tmp_path / "bt" / "orders.parquet")
    assert orders.height > 0 and set(orders["status"]) == {"suspended"}
    assert metrics["orders_filled"] == 0 and metrics["traded"] is False
    assert metrics["orders_blocked"] == metrics["orders_suspended"] == orders.height
    assert metrics["days_without_position"] == metrics["days"] == result.returns.height
    assert metrics["warnings"] == [
        f"no order was filled: {orders.height:,} were blocked ({orders.height:,} suspended, 0 "
        "at a price limit); the strategy never held a position and its returns are 0%"
    ]
    assert "no order was filled" in (tmp_path / "bt" / "report.html").read_text()
    # lots the cash cannot pay for: no order is even placed
    huge = BacktestConfig(lot_size=1_000_000_000, limit_threshold=None)
    dear = run_backtest(closes_only[1], pl.read_parquet(path), None, topk=8, n_drop=2,
                        analyze_signal=False, config=huge)  # fmt: skip
    assert dear.orders.height == 0 and dear.metrics["orders_filled"] == 0
    assert dear.warnings == (
        "no order was filled, and none was blocked: no buy could be paid for (a lot costing "
        "more than the cash) or no name was ever chosen; the strategy never held a position "
        "and its returns are 0%",
    )


def test_the_order_counts_are_those_of_orders_parquet(market: tuple[Store, Path]) -> None:
    store, path = market
    result = run_backtest(store, pl.read_parquet(path), None, topk=8, n_drop=2,
                          analyze_signal=False)  # fmt: skip
    counts = dict(result.orders.group_by("status").len().iter_rows())
    m = result.metrics
    assert m["orders_filled"] == counts["filled"] > 0 and m["traded"] is True
    assert m["orders_suspended"] == counts.get("suspended", 0)
    assert m["orders_limit"] == counts.get("limit", 0)
    assert m["orders_blocked"] == m["orders_suspended"] + m["orders_limit"]
    # the signal is the 5-day reversal: no score on the first 5 days, so no book before
    first_scored = signal_first_scored(path)
    lead = result.returns.filter(pl.col("date") <= first_scored).height
    assert m["days_before_first_position"] == m["days_without_position"] == lead == 5
    assert m["warnings"] == [] and len(m["notes"]) == 1


def test_days_without_a_position_are_counted_and_warned(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    days = ["2021-01-04", "2021-01-05", "2021-01-06", "2021-01-07", "2021-01-08",
            "2021-01-11", "2021-01-12", "2021-01-13", "2021-01-14", "2021-01-15"]  # fmt: skip
    # B's last bar is on the 6th day; A trades every day but is never scored
    rows = [("A", d, 10.0) for d in days] + [("B", d, 20.0) for d in days[:6]]
    ingest_frame(store, table_spec("bars"), bars_frame(rows))
    signal = pl.DataFrame({"instrument": "B", "date": days[:6], "score": 1.0})
    result = run_backtest(store, signal, None, topk=1, n_drop=0, analyze_signal=False)
    # bought on day 1, closed at its last close on day 6 (delisted), nothing to buy after:
    # days 6 to 9 end in cash
    held = result.positions["date"].cast(pl.String).to_list()
    assert held == days[1:6]
    assert result.metrics["days"] == 9
    assert result.metrics["days_without_position"] == 4
    assert result.metrics["days_before_first_position"] == 0
    assert result.warnings == (
        "4 of the 9 days from the first position on ended without one (the first on "
        "2021-01-12); they count in the return and Sharpe as days in cash",
    )
    # a signal whose first scores are missing: the days before the book is built are a note
    late = signal.with_columns(
        pl.when(pl.col("date") < "2021-01-06").then(None).otherwise(1.0).alias("score")
    )
    result = run_backtest(store, late, None, topk=1, n_drop=0, analyze_signal=False)
    assert result.positions["date"].cast(pl.String).to_list() == days[3:6]
    assert result.metrics["days_before_first_position"] == 2
    assert result.metrics["days_without_position"] == 6
    assert result.notes == (
        "the first position was taken on 2021-01-07, 2 days after the first trading day; "
        "those days count in the figures as days in cash",
    )
    assert len(result.warnings) == 1 and result.warnings[0].startswith("4 of the 7 days")


def test_a_signal_off_the_store_is_refused_or_counted(market: tuple[Store, Path]) -> None:
    store, path = market
    signal = pl.read_parquet(path)
    names = sorted(set(signal["instrument"]))
    # ids the store does not have: integers, as a frame read from elsewhere may carry them
    codes = signal.with_columns(pl.col("instrument").rank("dense").cast(pl.Int64))
    with pytest.raises(UsageError) as caught:
        run_backtest(store, codes, None, source="preds.parquet")
    message = str(caught.value)
    assert message.startswith(
        f"preds.parquet: none of its {signal.height:,} scores is on an instrument and market "
        f"day of {store.location} (instruments in the signal: "
    )
    assert f"in the store: {', '.join(names[:3])};" in message and "\n" not in message
    # dates after the store's last day
    later = signal.with_columns(pl.col("date").dt.offset_by("10y"))
    with pytest.raises(UsageError, match=r"preds\.parquet: its scores run from .* has no market "
                       r"day on or after"):  # fmt: skip
        run_backtest(store, later, None, source="preds.parquet")
    # most ids unknown: counted, warned about, and the rest traded
    renamed = set(names[:25])
    partial = signal.with_columns(
        pl.when(pl.col("instrument").is_in(list(renamed)))
        .then(pl.lit("X") + pl.col("instrument"))
        .otherwise(pl.col("instrument"))
        .alias("instrument")
    )
    result = run_backtest(store, partial, None, topk=5, n_drop=1, analyze_signal=False)
    m = result.metrics
    kept = signal.filter(~pl.col("instrument").is_in(list(renamed))).height
    assert m["signal_rows"] == signal.height
    assert m["signal_rows_matched"] == kept
    assert m["signal_rows_unknown_instrument"] == signal.height - kept
    assert m["signal_rows_off_calendar"] == 0
    assert (
        m["signal_scores_used"]
        == partial.filter(~pl.col("instrument").str.starts_with("X"))["score"].is_not_null().sum()
    )
    assert result.warnings[0] == (
        f"the signal: only {kept:,} of its {signal.height:,} scores "
        f"({kept / signal.height:.0%}) are on the store's market "
        f"({signal.height - kept:,} on instruments the store lacks over the backtest's days, "
        "0 on days without bars); the rest are not traded"
    )
    assert set(result.positions["instrument"]) <= set(names[25:])
    # all of them: no warning, every row counted
    full = run_backtest(store, signal, None, topk=5, n_drop=1, analyze_signal=False)
    assert full.metrics["signal_rows_matched"] == signal.height and full.warnings == ()


def signal_first_scored(path: Path) -> object:
    return pl.read_parquet(path).drop_nulls("score")["date"].min()


@pytest.fixture(scope="module")
def market_signal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, pl.DataFrame]:
    root = tmp_path_factory.mktemp("extras")
    store = Store(root / "store")
    generate(store, 40, 200, seed=3, alpha_ic=0.1)
    bars = read_bars(store, ["close"], adjust="adjusted")
    signal = bars.with_columns(
        score=-(pl.col("close") / pl.col("close").shift(5).over("instrument") - 1)
    ).drop("close")
    return store, signal


def test_the_benchmark_is_the_stored_index(
    market_signal: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    store, signal = market_signal
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
    market_signal: tuple[Store, pl.DataFrame],
) -> None:
    store, signal = market_signal
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


@pytest.mark.parametrize("block_cells", [None, 1, 200])
def test_the_signal_is_measured_against_what_it_earns_when_traded(
    market_signal: tuple[Store, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
    block_cells: int | None,
) -> None:
    """Day by day against scipy, whether the panels are made in one block of rows, a row a
    block or a few; one day without scores leaves a gap in the analyzed days."""
    store, signal = market_signal
    if block_cells is not None:
        monkeypatch.setattr("quarry._memory.BLOCK_CELLS", block_cells)
    dates = signal["date"].unique().sort()
    gap = dates[120]
    signal = signal.filter(pl.col("date") != gap)
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
    assert gap not in set(result.signal.daily_ic["date"].to_list())
    assert "rank_ic" in result.metrics["signal"]


@pytest.mark.slow
def test_the_optimizer_strategy_keeps_its_limits(
    market_signal: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    from quarry.portfolio import OptimizerConfig

    store, signal = market_signal
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
def test_the_command_runs_the_optimizer(
    market_signal: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    store, signal = market_signal
    path = tmp_path / "signal.parquet"
    signal.write_parquet(path)
    out = tmp_path / "cli"
    code, _, err = run(
        "backtest", "--store", str(store.location), "--signal", str(path), "--strategy",
        "optimizer", "--rebalance-every", "20", "--lookback", "40", "--max-weight", "0.2",
        "--slippage", "0.001", "--out", str(out), "--png",
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
    market_signal: tuple[Store, pl.DataFrame],
) -> None:
    store, signal = market_signal
    result = run_backtest(store, signal, None, topk=6, n_drop=2, analyze_signal=False)
    held = result.positions.group_by("date").agg(pl.col("value").sum())
    days = result.returns.join(held, on="date", how="left").with_columns(
        pl.col("value_right").fill_null(0.0)
    )
    total = days["value_right"] + days["cash"]
    np.testing.assert_allclose(total.to_numpy(), days["value"].to_numpy(), rtol=1e-9)


def test_the_optimizer_reads_the_history_before_the_first_signal(
    market_signal: tuple[Store, pl.DataFrame],
) -> None:
    from quarry.portfolio import OptimizerConfig, optimize_weights

    store, signal = market_signal
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


@pytest.mark.parametrize("strategy", ["topk-dropout", "score-weighted"])
def test_bars_that_stop_are_a_delisting_only_when_the_store_says_so(
    strategy: str, tmp_path: Path
) -> None:
    """A and B both have no bars for the last four days (a vendor file that has not arrived;
    C's did). The instruments table says B delisted and A still lists: B is closed at its
    last close, A is held, marked at its last close, its orders blocked as suspended."""
    store = Store(tmp_path / "store")
    days = [date(2021, 3, d) for d in (1, 2, 3, 4, 5, 8, 9, 10, 11, 12)]
    rows = [
        {"instrument": name, "date": d, "open": p, "high": p, "low": p, "close": p,
         "volume": 1000.0}
        for name, step in (("A", 0.01), ("B", -0.01), ("C", 0.0))
        for k, d in enumerate(days)
        if name == "C" or k < 6
        for p in [10.0 * (1 + step) ** k]
    ]  # fmt: skip
    ingest_frame(store, table_spec("bars"), pl.DataFrame(rows))
    ingest_frame(
        store, table_spec("instruments"),
        pl.DataFrame({"instrument": ["A", "B", "C"], "list_date": [date(2020, 1, 2)] * 3,
                      "delist_date": [None, days[5], None]}),
    )  # fmt: skip
    scores = (("A", 2.0), ("B", 1.0), ("C", -1.0))
    signal = pl.DataFrame(
        [{"instrument": i, "date": d, "score": s} for d in days[:6] for i, s in scores]
    )
    result = run_backtest(
        store, signal, None, strategy=strategy, topk=2, n_drop=0, analyze_signal=False,
        config=BacktestConfig(min_cost=0.0, limit_threshold=None),
    )  # fmt: skip
    closed = result.orders.filter(pl.col("status") == "delisted")
    assert closed["instrument"].to_list() == ["B"]
    assert closed["date"].to_list() == [days[6]]  # the day after its last bar
    held = result.positions.filter(pl.col("instrument") == "A").sort("date")
    assert held["date"].max() == days[-1]  # still held on the last day
    last_close = 10.0 * 1.01**5
    assert held["value"][-1] == pytest.approx(held["shares"][-1] * last_close)
