"""The fast read path against a plain pandas reference, over random histories of commits:
bulk loads, corrections, backfills with earlier knowledge times and appends of new keys."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

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


def _known_daily(frame: pl.DataFrame, rng: np.random.Generator, lag_days: int) -> pl.DataFrame:
    """Each row known ``0..lag_days`` days after its date's 21:00 UTC."""
    lag = pl.Series(rng.integers(0, lag_days + 1, frame.height) * 86_400_000_000)
    return frame.with_columns(
        (
            pl.col("date").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            + pl.duration(hours=21)
            + pl.lit(lag).cast(pl.Duration("us"))
        ).alias("_kt")
    )


@pytest.mark.parametrize("seed", range(4))
def test_rows_known_one_by_one_read_as_the_reference(tmp_path: object, seed: int) -> None:
    """A history committed at once with a knowledge time per row (as a generated market is),
    then corrections with their own per-row times, some older than the rows they would
    replace, and ordinary commits: every as-of read equals the reference."""
    rng = np.random.default_rng(100 + seed)
    store = Store(f"{tmp_path}/s{seed}")
    bars = table_spec("bars")
    names = [f"I{i:03d}" for i in range(40)]
    dates = pd.bdate_range("2020-01-01", periods=60)
    end = datetime(2020, 6, 1, tzinfo=UTC)
    store.commit(bars, _known_daily(_frame(rng, names, dates), rng, 0), knowledge_time=end,
                 base=None)  # fmt: skip
    first = store.commits("bars")[0]  # visible from its first row's time, listed to its last
    assert (first.knowledge_time, first.last_known) == (
        datetime(2020, 1, 1, 21, tzinfo=UTC),
        datetime(2020, 3, 24, 21, tzinfo=UTC),
    )
    times = [end]
    for step in range(int(rng.integers(2, 5))):
        picks = rng.choice(names, size=int(rng.integers(1, 10)), replace=False).tolist()
        chunk = _frame(rng, picks, dates).sample(fraction=0.3, seed=seed * 10 + step)
        if rng.random() < 0.5:  # per-row times 0-20 days after each day: some before the spine's
            chunk = _known_daily(chunk, rng, 20)
            chunk = chunk.filter(pl.col("_kt") <= end)
            store.commit(bars, chunk, knowledge_time=end, base=store.table("bars"),
                         corrections=chunk.height)  # fmt: skip
            times.extend(chunk["_kt"].sample(min(3, chunk.height), seed=step).to_list())
        else:
            kt = datetime(2020, 2, 1, tzinfo=UTC) + timedelta(days=int(rng.integers(0, 90)))
            times.append(kt)
            ingest_frame(store, bars, chunk, knowledge_time=kt)
    probes = [None, *sorted(times), datetime(2020, 1, 15, 20, 59, tzinfo=UTC),
              datetime(2020, 1, 15, 21, tzinfo=UTC)]  # fmt: skip
    for as_of in probes:
        got = read_bars(store, ["close", "volume"], as_of=as_of)
        expected = pl.from_pandas(_reference(store, as_of)).with_columns(
            pl.col("date").cast(pl.Date)
        )
        assert_frame_equal(got, expected, check_dtypes=False)


def test_rows_known_one_by_one_keep_the_fast_path(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generated market's layout (a history with a knowledge time per row, corrections
    known days after the rows they correct) is read without a sort."""
    rng = np.random.default_rng(3)
    bars = table_spec("bars")
    names = [f"I{i:03d}" for i in range(20)]
    dates = pd.bdate_range("2020-01-01", periods=50)
    end = datetime(2020, 6, 1, tzinfo=UTC)
    history = _known_daily(_frame(rng, names, dates), rng, 0)
    store.commit(bars, history, knowledge_time=end, base=None)
    fixes = _known_daily(_frame(rng, names[:3], dates[10:15]), rng, 0).with_columns(
        pl.col("_kt") + pl.duration(days=3)
    )
    store.commit(bars, fixes, knowledge_time=end, base=store.table("bars"), corrections=15)
    as_of = datetime(2020, 1, 20, 12, tzinfo=UTC)  # after some fixes, before the others

    def no_general_path(*args: object, **kwargs: object) -> None:
        raise AssertionError("general path used")

    monkeypatch.setattr(Store, "scan", no_general_path)
    monkeypatch.setattr("quarry.data._resolve.sort_by_key", no_general_path)
    got = [read_latest(store, bars, ["close"], None, t) for t in (None, as_of)]
    monkeypatch.undo()
    for g, t in zip(got, (None, as_of), strict=True):
        expected = pl.from_pandas(_reference(store, t)).with_columns(pl.col("date").cast(pl.Date))
        if t is not None:  # read_latest does not bound dates by as_of: the knowledge times do
            assert g["date"].max() == date(2020, 1, 17)
        assert_frame_equal(
            g.select("instrument", "date", "close"), expected.select("instrument", "date", "close")
        )


def test_a_commit_known_within_the_same_millisecond_after_as_of_is_invisible(
    store: Store,
) -> None:
    """Delta's file statistics keep times to the millisecond: the rows' own times decide."""
    known = datetime(2020, 1, 3, 12, 0, 0, 123456, tzinfo=UTC)
    ingest_frame(store, table_spec("bars"), _frame(np.random.default_rng(0), ["A"],
                 pd.bdate_range("2020-01-01", periods=2)), knowledge_time=known)  # fmt: skip
    assert read_bars(store, ["close"], as_of=known - timedelta(microseconds=200)).height == 0
    assert read_bars(store, ["close"], as_of=known).height == 2
