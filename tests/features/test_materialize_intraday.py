"""Features of intraday bars read from a store: the same values as from the bars themselves,
the rows bounded by times (or by whole days), and the cache keyed by those bounds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, ingest_frame, table_spec
from quarry.data._minute_bars import minute_bars
from quarry.features import materialize
from quarry.features._cache import FeatureCache
from quarry.features._sets import alpha158

FIELDS = ["open", "high", "low", "close", "volume", "vwap"]


@pytest.fixture
def minute_store(tmp_path: Path) -> tuple[Store, pl.DataFrame]:
    bars = minute_bars(12, sessions=3, minutes=80, seed=5).select("instrument", "date", *FIELDS)
    store = Store(tmp_path / "store")
    ingest_frame(store, table_spec("bars"), bars, knowledge_time="2024-01-10")
    return store, bars


def test_alpha158_from_an_intraday_store_equals_the_bars_themselves(
    minute_store: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    store, bars = minute_store
    features = alpha158()
    materialize(store, features, tmp_path / "store.parquet")
    materialize(bars, features, tmp_path / "bars.parquet")
    got = pl.read_parquet(tmp_path / "store.parquet")
    want = pl.read_parquet(tmp_path / "bars.parquet")
    assert got.schema["date"] == pl.Datetime("us", "UTC") and got.height == bars.height
    assert_frame_equal(got, want)


def test_rows_are_bounded_by_times_or_whole_days(
    minute_store: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    store, bars = minute_store
    times = bars["date"].unique().sort()
    start, end = times[50], times[120]
    expr = {"C": "$close"}
    materialize(store, expr, tmp_path / "t.parquet", start=start, end=end)
    got = pl.read_parquet(tmp_path / "t.parquet")
    assert (got["date"].min(), got["date"].max()) == (start, end)
    assert got.height == bars.filter(pl.col("date").is_between(start, end)).height
    second: date = sorted(set(bars["date"].dt.date().to_list()))[1]
    materialize(store, expr, tmp_path / "d.parquet", start=second, end=second)
    day = pl.read_parquet(tmp_path / "d.parquet")
    assert day.height == bars.filter(pl.col("date").dt.date() == second).height > 0


def test_the_cache_tells_time_bounds_apart(
    minute_store: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    store, bars = minute_store
    cache = FeatureCache(tmp_path / "cache")
    t0 = bars["date"].min()
    for minutes in (10, 20):
        end = t0 + timedelta(minutes=minutes)
        out = tmp_path / f"{minutes}.parquet"
        materialize(store, {"C": "$close"}, out, end=end, cache=cache)
        assert pl.read_parquet(out)["date"].max() == end


def test_an_end_time_before_every_bar_writes_nothing_and_says_so(
    minute_store: tuple[Store, pl.DataFrame], tmp_path: Path
) -> None:
    store, _ = minute_store
    from quarry.exceptions import DataError

    with pytest.raises(DataError, match="no rows"):
        materialize(
            store, {"C": "$close"}, tmp_path / "x.parquet", end=datetime(2023, 1, 1, tzinfo=UTC)
        )


@pytest.mark.parametrize("zone", [None, "America/New_York"])
def test_times_in_any_zone_are_bounded_in_utc(zone: str | None, tmp_path: Path) -> None:
    bars = minute_bars(4, sessions=2, minutes=30, seed=6).select("instrument", "date", *FIELDS)
    stamp = pl.col("date")
    zoned = bars.with_columns(
        stamp.dt.replace_time_zone(None) if zone is None else stamp.dt.convert_time_zone(zone)
    )
    end = bars["date"].min() + timedelta(minutes=10)  # an aware UTC time
    materialize(zoned, {"C": "$close"}, tmp_path / "z.parquet", end=end)
    got = pl.read_parquet(tmp_path / "z.parquet")
    assert got.height == bars.filter(pl.col("date") <= end).height > 0
