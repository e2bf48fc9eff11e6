"""A signal and the store's market on one grid."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from quarry.backtest._market import align
from quarry.data import Store, generate, read_bars
from quarry.exceptions import UsageError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(tmp_path_factory.mktemp("bt") / "store")
    generate(s, 12, 120, seed=5)
    return s


def test_the_grid_holds_the_adjusted_bars_and_the_signal(store: Store) -> None:
    bars = read_bars(store, ["open", "close", "volume"], adjust="adjusted")
    signal = bars.select("instrument", "date", pl.col("close").alias("score")).filter(
        pl.col("date") >= pl.col("date").min() + pl.duration(days=30)
    )
    got = align(store, signal, deal_price="open")
    assert got.dates[0] == signal["date"].min()
    row = bars.filter(pl.col("date") == got.dates[5]).row(3, named=True)
    i = got.instruments.index(row["instrument"])
    assert got.market.deal[5, i] == pytest.approx(row["open"])
    assert got.market.close[5, i] == pytest.approx(row["close"])
    assert got.scores[5, i] == pytest.approx(row["close"])
    assert np.isnan(got.scores).sum() == got.scores.size - signal.height


def test_scores_outside_the_universe_are_dropped(store: Store) -> None:
    bars = read_bars(store, ["close"], adjust="adjusted")
    signal = bars.select("instrument", "date", pl.lit(1.0).alias("score"))
    members = read_bars(store, ["close"], universe="all")
    got = align(store, signal, universe="all")
    assert int(np.isfinite(got.scores).sum()) == members.height


def test_bad_inputs_are_one_line(store: Store) -> None:
    signal = pl.DataFrame({"instrument": ["X"], "date": [None]}, schema_overrides={"date": pl.Date})
    with pytest.raises(UsageError, match="no score column"):
        align(store, signal)
    with pytest.raises(UsageError, match="choose one of open, close, vwap"):
        align(store, signal.with_columns(score=pl.lit(1.0)), deal_price="mid")
