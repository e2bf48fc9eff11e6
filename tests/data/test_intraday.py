"""Intraday bars in the store: times as keys, with the point-in-time rules of daily bars.

References are computed here by hand (plain polars/numpy over the file's own rows): the
time a vendor wrote with an offset, the bars known at a time, the factor of a split from the
first bar of its ex-date, the close a dividend is paid from, membership by day.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, ingest_file, ingest_frame, read_bars, table_spec
from quarry.data._minute_bars import minute_bars
from quarry.exceptions import BadInputError, UsageError

EASTERN = timezone(timedelta(hours=-5))  # a vendor that writes New York winter times
FIELDS = ["open", "high", "low", "close", "volume"]


def _csv(frame: pl.DataFrame, path: Path, zone: timezone = UTC) -> Path:
    """Bars as a vendor CSV with ISO times in ``zone``, offset written out."""
    text = [t.astimezone(zone).isoformat(timespec="seconds") for t in frame["date"].to_list()]
    frame.with_columns(pl.Series("date", text)).write_csv(path)
    return path


@pytest.fixture
def bars() -> pl.DataFrame:
    """Two sessions of 30 minute bars for 6 instruments, with gaps and a late listing."""
    return minute_bars(6, sessions=2, minutes=30, seed=3).select("instrument", "date", *FIELDS)


def test_times_with_an_offset_are_stored_in_utc_and_read_back(
    store: Store, bars: pl.DataFrame, tmp_path: Path
) -> None:
    path = _csv(bars, tmp_path / "bars.csv", EASTERN)
    assert "-05:00" in path.read_text().splitlines()[1]
    result = ingest_file(store, "bars", path, knowledge_time="2024-01-10")
    assert result.new == bars.height
    assert store.spec("bars").intraday
    got = read_bars(store, FIELDS)
    assert got.schema["date"] == pl.Datetime("us", "UTC")
    want = bars.sort("instrument", "date")
    assert_frame_equal(got, want, check_exact=False, rel_tol=1e-12)


def test_a_bar_is_known_from_its_commit_and_read_up_to_as_of_by_time(
    store: Store, bars: pl.DataFrame
) -> None:
    times = bars["date"].unique().sort()
    first, later = times[:10], times[10:]
    # Each slice delivered one minute after its last bar.
    for part in (first, later):
        rows = bars.filter(pl.col("date").is_in(part.implode()))
        ingest_frame(
            store, table_spec("bars"), rows, knowledge_time=part.max() + timedelta(minutes=1)
        )
    middle = first.max() + timedelta(minutes=1)  # the first delivery, not the second
    got = read_bars(store, ["close"], as_of=middle)
    want = bars.filter(pl.col("date") <= first.max())
    assert got.height == want.height > 0
    assert got["date"].max() == first.max()
    # Known later, and a bar timed after as_of is out even when its commit is known.
    assert read_bars(store, ["close"], as_of=middle - timedelta(seconds=1)).height == 0
    cut = later[5]
    everything = read_bars(store, ["close"], as_of="2024-01-10", end=cut.isoformat())
    assert everything["date"].max() == cut
    assert everything.height == bars.filter(pl.col("date") <= cut).height


def test_a_correction_is_history_at_intraday_times(store: Store, bars: pl.DataFrame) -> None:
    spec = table_spec("bars")
    ingest_frame(store, spec, bars, knowledge_time="2024-01-10T00:00")
    row = bars.row(7, named=True)
    fixed = bars.slice(7, 1).with_columns(pl.col("close") * 1.01, pl.col("high") * 1.02)
    result = ingest_frame(store, spec, fixed, knowledge_time="2024-01-11T00:00")
    assert result.corrected == 1 and result.new == 0
    one = pl.col("instrument") == row["instrument"]
    before = read_bars(store, ["close"], as_of="2024-01-10T12:00").filter(one)
    after = read_bars(store, ["close"], as_of="2024-01-11T12:00").filter(one)
    at = pl.col("date") == row["date"]
    assert before.filter(at)["close"].item() == row["close"]
    assert after.filter(at)["close"].item() == pytest.approx(row["close"] * 1.01)


def test_a_date_bounds_intraday_bars_by_its_whole_day(store: Store, bars: pl.DataFrame) -> None:
    ingest_frame(store, table_spec("bars"), bars, knowledge_time="2024-01-10")
    day = bars["date"].min().date()
    got = read_bars(store, ["close"], start=str(day), end=str(day))
    want = bars.filter(pl.col("date").dt.date() == day)
    assert got.height == want.height > 0


def test_sub_millisecond_times_are_bounded_exactly(store: Store) -> None:
    """Delta keeps a file's largest time to the millisecond, rounded down: a range end
    between that and the true largest time must still cut the file's last row."""
    t0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "instrument": ["A", "A"],
            "date": [t0, t0 + timedelta(microseconds=900)],
            **{f: [10.0, 10.0] for f in FIELDS},
        }
    ).with_columns(pl.col("date").cast(pl.Datetime("us", "UTC")))
    ingest_frame(store, table_spec("bars"), frame, knowledge_time="2024-01-10")
    end = (t0 + timedelta(microseconds=500)).isoformat()
    assert read_bars(store, ["close"], end=end).height == 1
    assert read_bars(store, ["close"]).height == 2


def test_a_split_applies_from_the_first_bar_of_its_ex_date(
    store: Store, bars: pl.DataFrame, write_csv: Callable[[str, str], Path]
) -> None:
    ingest_frame(store, table_spec("bars"), bars, knowledge_time="2024-01-10")
    second = sorted(set(bars["date"].dt.date().to_list()))[1]
    name = bars["instrument"][0]
    acts = write_csv("a.csv", f"instrument,ex_date,kind,ratio\n{name},{second},split,2")
    ingest_file(store, "actions", acts, knowledge_time="2024-01-10")
    got = read_bars(store, ["close", "factor"], adjust="adjusted")
    raw = bars.sort("instrument", "date")
    factor = np.where(
        (raw["instrument"] == name).to_numpy() & (raw["date"].dt.date() >= second).to_numpy(),
        2.0,
        1.0,
    )
    np.testing.assert_allclose(got["factor"].to_numpy(), factor)
    np.testing.assert_allclose(got["close"].to_numpy(), raw["close"].to_numpy() * factor)


def test_a_dividend_is_paid_from_the_last_bar_before_its_ex_date(
    store: Store, bars: pl.DataFrame, write_csv: Callable[[str, str], Path]
) -> None:
    ingest_frame(store, table_spec("bars"), bars, knowledge_time="2024-01-10")
    second = sorted(set(bars["date"].dt.date().to_list()))[1]
    name = bars["instrument"][0]
    mine = bars.filter(pl.col("instrument") == name).sort("date")
    prev = mine.filter(pl.col("date").dt.date() < second)["close"][-1]  # the last bar of day 1
    acts = write_csv("a.csv", f"instrument,ex_date,kind,amount\n{name},{second},dividend,0.5")
    ingest_file(store, "actions", acts, knowledge_time="2024-01-10")
    got = read_bars(store, ["factor"], adjust="adjusted", instruments=[name])
    step = prev / (prev - 0.5)
    want = np.where(mine["date"].dt.date().to_numpy() >= second, step, 1.0)
    np.testing.assert_allclose(got["factor"].to_numpy(), want)
    # A dividend at or above that close is refused, naming it.
    big = write_csv("b.csv", f"instrument,ex_date,kind,amount\n{name},{second},dividend,{prev}")
    with pytest.raises(BadInputError, match="the close before it is"):
        ingest_file(store, "actions", big, knowledge_time="2024-01-10", replace=True)


def test_universe_membership_and_fundamentals_hold_by_day(
    store: Store, bars: pl.DataFrame, write_csv: Callable[[str, str], Path]
) -> None:
    ingest_frame(store, table_spec("bars"), bars, knowledge_time="2024-01-10")
    days = sorted(set(bars["date"].dt.date().to_list()))
    a, b = sorted(bars["instrument"].unique())[:2]
    universe = write_csv("u.csv", f"instrument,start,end\n{a},{days[0]},{days[0]}\n{b},{days[1]},")
    ingest_file(store, "universe", universe, universe="u", knowledge_time="2024-01-10")
    got = read_bars(store, ["close"], universe="u")
    want = bars.filter(
        ((pl.col("instrument") == a) & (pl.col("date").dt.date() == days[0]))
        | ((pl.col("instrument") == b) & (pl.col("date").dt.date() >= days[1]))
    )
    assert got.height == want.height > 0
    # published on the first day, at a time of day the file does not give (after the close,
    # say): none of that day's bars may see it, the next day's all do
    fund = write_csv(
        "f.csv",
        f"instrument,field,period_end,knowledge_date,value\n{a},eps,{days[0]},{days[0]},1.5",
    )
    ingest_file(store, "fundamentals", fund, knowledge_time="2024-01-10")
    eps = read_bars(store, ["eps"], instruments=[a])
    known = eps["date"].dt.date() >= days[1]
    assert eps.filter(known)["eps"].to_list() == [1.5] * int(known.sum()) != []
    assert eps.filter(~known)["eps"].null_count() == int((~known).sum()) > 0


def test_a_store_keeps_the_frequency_of_its_first_bars(
    tmp_path: Path, bars: pl.DataFrame, write_csv: Callable[[str, str], Path]
) -> None:
    daily = Store(tmp_path / "daily")
    day_file = write_csv(
        "d.csv", "instrument,date,open,high,low,close,volume\nA,2024-01-02,1,1,1,1,1"
    )
    ingest_file(daily, "bars", day_file, knowledge_time="2024-01-10")
    minute_file = _csv(bars, tmp_path / "m.csv")
    with pytest.raises(UsageError, match=r"m\.csv: line 2, column 'date': .* store holds daily"):
        ingest_file(daily, "bars", minute_file, knowledge_time="2024-01-10")
    with pytest.raises(UsageError, match="holds daily bars and these are intraday"):
        ingest_frame(daily, table_spec("bars"), bars, knowledge_time="2024-01-10")
    intraday = Store(tmp_path / "intraday")
    ingest_file(intraday, "bars", minute_file, knowledge_time="2024-01-10")
    with pytest.raises(BadInputError, match=r"line 2, column 'date': unparseable time"):
        ingest_file(intraday, "bars", day_file, knowledge_time="2024-01-10")
    assert not daily.spec("bars").intraday and intraday.spec("bars").intraday
    assert len(daily.commits("bars")) == len(intraday.commits("bars")) == 1  # nothing written


def test_a_bar_timed_after_the_knowledge_time_is_refused(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv(
        "b.csv",
        "instrument,date,open,high,low,close,volume\n"
        "A,2024-01-02T14:30:00Z,1,1,1,1,1\nA,2024-01-02T14:31:00Z,1,1,1,1,1",
    )
    with pytest.raises(BadInputError, match=r"line 3, column 'date': timed after the knowledge"):
        ingest_file(store, "bars", path, knowledge_time="2024-01-02T14:30:30Z")
    assert ingest_file(store, "bars", path, knowledge_time="2024-01-02T14:31:00Z").new == 2


def test_days_written_as_midnights_are_days(
    tmp_path: Path, write_csv: Callable[[str, str], Path]
) -> None:
    daily = Store(tmp_path / "daily")
    path = write_csv(
        "d.csv",
        "instrument,date,open,high,low,close,volume\n"
        "A,2024-01-02T00:00:00,1,1,1,1,1\nA,2024-01-03 00:00,2,2,2,2,2",
    )
    assert ingest_file(daily, "bars", path, knowledge_time="2024-01-10").new == 2
    assert not daily.spec("bars").intraday
    assert read_bars(daily, ["close"])["date"].to_list() == [date(2024, 1, 2), date(2024, 1, 3)]
    stamps = pl.DataFrame(
        {
            "instrument": ["A"],
            "date": [datetime(2024, 1, 4, tzinfo=UTC)],
            **{f: [3.0] for f in FIELDS},
        }
    )
    assert ingest_frame(daily, table_spec("bars"), stamps, knowledge_time="2024-01-10").new == 1
    assert read_bars(daily, ["close"])["date"].to_list()[-1] == date(2024, 1, 4)
