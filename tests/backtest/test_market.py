"""A signal and the store's market on one grid."""

from __future__ import annotations

from datetime import date
from pathlib import Path

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


def test_the_history_before_the_first_signal_date_is_read(store: Store) -> None:
    bars = read_bars(store, ["close"], adjust="adjusted")
    dates = bars["date"].unique().sort()
    signal = bars.filter(pl.col("date") >= dates[50]).rename({"close": "score"})
    got = align(store, signal, history=30)
    assert got.dates[0] == dates[50]
    # independent: the 30 market days before it, pivoted from the store's bars
    wide = bars.filter(pl.col("date").is_between(dates[20], dates[49])).pivot(
        on="instrument", index="date", values="close"
    )
    assert got.past_close is not None and got.past_close.shape == (30, len(got.instruments))
    expected = wide.to_pandas().set_index("date").sort_index().reindex(columns=got.instruments)
    assert expected.isna().all().any()  # a name listed later: no closes then
    np.testing.assert_allclose(got.past_close, expected.to_numpy())
    # asked for more than the store has: all it has
    assert align(store, signal, history=500).past_close.shape[0] == 50  # type: ignore[union-attr]
    assert align(store, signal).past_close is None


def test_the_coverage_counts_where_the_scores_fell(store: Store) -> None:
    bars = read_bars(store, ["close"], adjust="adjusted")
    signal = bars.rename({"close": "score"})
    weekend = pl.DataFrame({"instrument": [signal["instrument"][0]] * 2, "score": [1.0, 2.0],
                            "date": [date(2030, 1, 5), date(2030, 1, 6)]})  # fmt: skip
    stranger = pl.DataFrame({"instrument": ["NOPE"], "date": [signal["date"][3]],
                             "score": [1.0]})  # fmt: skip
    got = align(store, pl.concat([signal, weekend, stranger], how="diagonal"))
    assert got.coverage is not None
    assert got.coverage.as_dict() == {
        "signal_rows": signal.height + 3,
        "signal_rows_matched": signal.height,
        "signal_rows_unknown_instrument": 1,
        "signal_rows_off_calendar": 2,
        "signal_scores_used": signal.height,
    }


def test_volume_only_in_the_history_does_not_make_later_days_suspended(tmp_path: Path) -> None:
    """A name whose volume stops before the first signal date trades on its price, with or
    without the risk model's history read before it (the optimizer reads it, TopK does not)."""
    from quarry.data import ingest_frame, table_spec

    store = Store(tmp_path / "store")
    days = [date(2021, 1, d) for d in (4, 5, 6, 7, 8, 11, 12, 13, 14, 15)]
    rows = [
        {"instrument": name, "date": d, "open": 10.0, "high": 10.5, "low": 9.5, "close": 10.0,
         "volume": (1000.0 if name == "B" or k < 5 else None)}
        for name in ("A", "B") for k, d in enumerate(days)
    ]  # fmt: skip
    ingest_frame(store, table_spec("bars"), pl.DataFrame(rows))
    signal = pl.DataFrame(
        {
            "instrument": ["A", "B"] * 5,
            "date": [d for d in days[5:] for _ in range(2)],
            "score": [1.0, 0.5] * 5,
        }
    )
    without = align(store, signal)
    with_history = align(store, signal, history=5)
    assert with_history.past_close is not None and with_history.past_close.shape[0] == 5
    for grid in (without, with_history):
        assert [bool(grid.market.active(day)[0]) for day in range(5)] == [True] * 5
