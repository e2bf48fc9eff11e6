"""Backtests on intraday bars: the same simulation as on days, bar by bar, with figures a year
of bars long.

The reference for the simulation is the daily backtest itself: a market with one bar a day,
stored once keyed by date and once keyed by the bar's time, gives the same returns,
positions and orders. The figures are checked against empyrical with the year's bars as its
annualization.
"""

from __future__ import annotations

from pathlib import Path

import empyrical
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.backtest import run_backtest
from quarry.data import Store, ingest_frame, table_spec
from quarry.data._minute_bars import minute_bars
from quarry.exceptions import UsageError

FIELDS = ["open", "high", "low", "close", "volume", "vwap"]
KT = "2025-06-01"


def _signal(bars: pl.DataFrame) -> pl.DataFrame:
    """A score that knows nothing of the future: the last bar's return, reversed."""
    return bars.sort("instrument", "date").select(
        "instrument",
        "date",
        (-(pl.col("close") / pl.col("close").shift(1).over("instrument") - 1)).alias("score"),
    )


def test_one_bar_a_day_keyed_by_time_trades_as_the_daily_market(tmp_path: Path) -> None:
    # 40 instruments, 60 sessions of a single bar: a daily market whatever its key.
    bars = minute_bars(40, sessions=60, minutes=1, seed=11).select("instrument", "date", *FIELDS)
    daily_bars = bars.with_columns(pl.col("date").dt.date())
    daily, intraday = Store(tmp_path / "daily"), Store(tmp_path / "intraday")
    ingest_frame(daily, table_spec("bars"), daily_bars, knowledge_time=KT)
    ingest_frame(intraday, table_spec("bars"), bars, knowledge_time=KT)
    by_day = run_backtest(daily, _signal(daily_bars), None, topk=8, n_drop=2)
    by_time = run_backtest(intraday, _signal(bars), None, topk=8, n_drop=2)
    assert by_day.metrics["traded"] and by_day.metrics["orders_filled"] > 0
    assert by_time.metrics["frequency"] == "intraday"
    assert by_time.metrics["periods_per_year"] == by_day.metrics["periods_per_year"] == 252
    for frame in ("returns", "positions", "orders"):
        got = getattr(by_time, frame).with_columns(pl.col("date").dt.date())
        assert_frame_equal(got, getattr(by_day, frame), check_exact=False, rel_tol=1e-12)
    for key in ("annualized_return", "sharpe", "max_drawdown", "turnover", "days"):
        assert by_time.metrics[key] == pytest.approx(by_day.metrics[key], rel=1e-12)


def test_minute_bars_are_traded_bar_by_bar_and_annualized_by_the_session(
    tmp_path: Path,
) -> None:
    bars = minute_bars(30, sessions=4, minutes=45, seed=12).select("instrument", "date", *FIELDS)
    store = Store(tmp_path / "store")
    ingest_frame(store, table_spec("bars"), bars, knowledge_time=KT)
    result = run_backtest(store, _signal(bars), tmp_path / "out", topk=6, n_drop=1)
    m = result.metrics
    times = bars["date"].unique().sort()
    assert m["traded"] and m["periods_per_year"] == 252 * 45
    # one row of returns a bar, from the second bar on, each a time of the market
    assert result.returns["date"].to_list() == times.to_list()[1:]
    orders = result.orders.filter(pl.col("status") == "filled")
    assert orders["date"].dt.time().n_unique() > 1  # traded within the sessions
    net = result.returns["return_net"].to_numpy()
    periods = 252 * 45
    assert m["annualized_return"] == pytest.approx(
        empyrical.annual_return(net, annualization=periods)
    )
    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(net, annualization=periods))
    assert (tmp_path / "out" / "report.html").stat().st_size > 0


def test_a_signal_of_another_frequency_is_refused(tmp_path: Path) -> None:
    bars = minute_bars(10, sessions=3, minutes=20, seed=13).select("instrument", "date", *FIELDS)
    store = Store(tmp_path / "store")
    ingest_frame(store, table_spec("bars"), bars, knowledge_time=KT)
    by_day = (
        _signal(bars)
        .with_columns(pl.col("date").dt.date())
        .unique(["instrument", "date"], keep="last")
    )
    with pytest.raises(UsageError, match=r"dated by day .* holds intraday bars"):
        run_backtest(store, by_day, None, topk=3, n_drop=1)


def test_scores_between_bars_are_off_the_calendar(tmp_path: Path) -> None:
    bars = minute_bars(10, sessions=2, minutes=30, seed=14).select("instrument", "date", *FIELDS)
    store = Store(tmp_path / "store")
    ingest_frame(store, table_spec("bars"), bars, knowledge_time=KT)
    signal = _signal(bars)
    # half the scores moved 30 s off their bar: no bar then, so they are not traded
    shifted = signal.with_columns(
        pl.when(pl.int_range(pl.len()) % 2 == 0)
        .then(pl.col("date") + pl.duration(seconds=30))
        .otherwise(pl.col("date"))
        .alias("date")
    )
    result = run_backtest(store, shifted, None, topk=3, n_drop=1)
    off = (shifted["date"].dt.second() == 30).sum()
    assert result.metrics["signal_rows_off_calendar"] == off > 0
    assert result.metrics["signal_rows_matched"] == signal.height - off


def test_a_text_signal_with_offsets_lands_on_the_utc_bars(tmp_path: Path) -> None:
    bars = minute_bars(10, sessions=2, minutes=30, seed=15).select("instrument", "date", *FIELDS)
    store = Store(tmp_path / "store")
    ingest_frame(store, table_spec("bars"), bars, knowledge_time=KT)
    signal = _signal(bars)
    text = signal.with_columns(
        pl.col("date").dt.convert_time_zone("America/New_York").dt.strftime("%Y-%m-%dT%H:%M:%S%:z")
    )
    assert "-05:00" in text["date"][0]
    a = run_backtest(store, signal, None, topk=3, n_drop=1)
    b = run_backtest(store, text, None, topk=3, n_drop=1)
    assert b.metrics["signal_rows_matched"] == signal.height
    assert_frame_equal(a.returns, b.returns)
