"""The fast read path against a plain pandas reference, over random histories of commits:
bulk loads, corrections, backfills with earlier knowledge times and appends of new keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, ingest_frame, read_bars, table_spec
from quarry.data._resolve import read_latest


def _reference(store: Store, as_of: datetime | None) -> pd.DataFrame:
    """Latest version of each (instrument, date) among rows known at as_of, in pandas."""
    raw = store.scan_raw("bars")
    assert raw is not None
    df = raw.collect().to_pandas()
    if as_of is not None:
        df = df[(df["_kt"] <= pd.Timestamp(as_of)) & (df["date"] <= pd.Timestamp(as_of.date()))]
    df = df.sort_values(["instrument", "date", "_kt", "_version"])
    df = df.drop_duplicates(["instrument", "date"], keep="last")
    df = df[~df["_deleted"]]
    return df[["instrument", "date", "close", "volume"]].reset_index(drop=True)


def _frame(
    rng: np.random.Generator, instruments: list[str], dates: pd.DatetimeIndex
) -> pl.DataFrame:
    inst = np.repeat(instruments, len(dates))
    day = np.tile(dates.values.astype("datetime64[D]"), len(instruments))
    close = np.round(rng.uniform(1, 100, inst.size), 2)
    return pl.DataFrame(
        {"instrument": inst, "date": day, "open": close, "high": close, "low": close,
         "close": close, "volume": np.round(rng.uniform(0, 1e6, inst.size))}
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(6))
def test_fast_read_equals_reference(tmp_path: object, seed: int) -> None:
    rng = np.random.default_rng(seed)
    store = Store(f"{tmp_path}/s{seed}")
    bars = table_spec("bars")
    names = [f"I{i:03d}" for i in range(60)]
    dates = pd.bdate_range("2020-01-01", periods=80)
    t0 = datetime(2020, 6, 1, tzinfo=UTC)
    # A bulk load in two disjoint halves, so that the spine spans two commits.
    ingest_frame(store, bars, _frame(rng, names[:30], dates), knowledge_time=t0)
    ingest_frame(store, bars, _frame(rng, names[30:], dates), knowledge_time=t0)
    times = [t0]
    for step in range(int(rng.integers(2, 6))):
        kt = t0 + timedelta(days=int(rng.integers(-30, 30)))  # some are backfills
        times.append(kt)
        picks = rng.choice(names, size=int(rng.integers(1, 8)), replace=False).tolist()
        chunk = _frame(rng, picks, dates).sample(fraction=0.2, seed=seed * 10 + step)
        if rng.random() < 0.3:  # new keys: dates after the bulk load
            chunk = pl.concat(
                [
                    chunk,
                    _frame(rng, picks, pd.bdate_range(dates[-1] + pd.Timedelta(days=1), periods=3)),
                ]
            )
        # Some files replace their instruments' rows in their date range: keys they lack
        # are retracted.
        ingest_frame(store, bars, chunk, knowledge_time=kt, replace=bool(rng.random() < 0.3))
    for as_of in [None, *sorted(times), t0 - timedelta(days=1)]:
        got = read_bars(store, ["close", "volume"], as_of=as_of)
        expected = pl.from_pandas(_reference(store, as_of)).with_columns(
            pl.col("date").cast(pl.Date)
        )
        assert_frame_equal(got, expected, check_dtypes=False)


@pytest.mark.parametrize("later", ["corrections", "appended days", "both", "retractions"])
def test_fast_path_is_taken(store: Store, monkeypatch: pytest.MonkeyPatch, later: str) -> None:
    """A bulk load plus later corrections or daily appends must not fall back to a sort."""
    rng = np.random.default_rng(1)
    bars = table_spec("bars")
    names = [f"I{i:03d}" for i in range(20)]
    dates = pd.bdate_range("2020-01-01", periods=50)
    ingest_frame(store, bars, _frame(rng, names, dates), knowledge_time="2020-06-01")
    if later in ("corrections", "both"):
        ingest_frame(store, bars, _frame(rng, names[:3], dates[:5]), knowledge_time="2020-07-01")
    if later == "retractions":  # a file for 3 instruments over 5 days, missing its 2nd day
        fix = _frame(rng, names[:3], dates[[0, 2, 3, 4]])
        result = ingest_frame(store, bars, fix, knowledge_time="2020-07-01", replace=True)
        assert result.retracted == 3
    if later in ("appended days", "both"):
        for k, day in enumerate(pd.bdate_range(dates[-1] + pd.Timedelta(days=1), periods=3)):
            new = _frame(rng, names[k:], pd.DatetimeIndex([day]))  # one instrument fewer each day
            ingest_frame(store, bars, new, knowledge_time=f"2020-07-0{k + 2}")

    def no_general_path(*args: object, **kwargs: object) -> None:
        raise AssertionError("general path used")

    monkeypatch.setattr(Store, "scan", no_general_path)
    monkeypatch.setattr("quarry.data._resolve.sort_by_key", no_general_path)
    got = read_latest(store, bars, ["close"], None, None)
    monkeypatch.undo()
    expected = pl.from_pandas(_reference(store, None)).with_columns(pl.col("date").cast(pl.Date))
    assert_frame_equal(
        got.select("instrument", "date", "close"), expected.select("instrument", "date", "close")
    )


def test_locate_matches_a_python_reference() -> None:
    from quarry.data._steps import locate

    rng = np.random.default_rng(4)
    big = _frame(
        rng, [f"I{i:02d}" for i in range(0, 30, 3)], pd.bdate_range("2020-01-01", periods=30)
    )
    big = big.filter(pl.Series(rng.random(big.height) < 0.7)).select("instrument", "date")
    small = (
        _frame(rng, [f"I{i:02d}" for i in range(30)], pd.bdate_range("2019-12-20", periods=50))
        .filter(pl.Series(rng.random(1500) < 0.2))
        .select("instrument", "date")
    )
    pos, found = locate(big, small)
    keys = list(big.iter_rows())
    import bisect

    for (inst, day), p, f in zip(small.iter_rows(), pos, found, strict=True):
        assert p == bisect.bisect_left(keys, (inst, day))
        assert f == ((inst, day) in set(keys))
