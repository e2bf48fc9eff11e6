"""Loading and checking a signal: every kind of input either gives the canonical frame or a
one-line error naming the file, the column and the row."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.backtest import check_signal, load_signal, run_backtest
from quarry.data import Store, generate, read_bars
from quarry.exceptions import DataError, UsageError


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, pl.DataFrame]:
    store = Store(tmp_path_factory.mktemp("signal") / "store")
    generate(store, 20, 90, seed=4, alpha_ic=0.1)
    bars = read_bars(store, ["close"], adjust="adjusted")
    signal = bars.with_columns(
        score=-(pl.col("close") / pl.col("close").shift(5).over("instrument") - 1)
    ).drop("close")
    return store, signal


CANONICAL = pl.DataFrame(
    {
        "instrument": ["A", "B", "A"],
        "date": [date(2021, 1, 4), date(2021, 1, 4), date(2021, 1, 5)],
        "score": [0.5, None, -1.0],
    }
)


def test_iso_text_dates_and_datetimes_are_dates() -> None:
    text = CANONICAL.with_columns(
        date=pl.Series(["2021-01-04", " 2021-01-04", "2021-01-05T00:00:00"])
    )
    assert_frame_equal(check_signal(text), CANONICAL)
    stamps = CANONICAL.with_columns(pl.col("date").cast(pl.Datetime("us")))
    assert_frame_equal(check_signal(stamps), CANONICAL)


def test_numbers_as_ids_and_scores_are_read_as_such() -> None:
    frame = pl.DataFrame({"instrument": [600000, 1], "date": ["2021-01-04"] * 2,
                          "score": [1, 2], "LABEL0": [0.1, 0.2]})  # fmt: skip
    got = check_signal(frame)
    assert got.columns == ["instrument", "date", "score"]
    assert got["instrument"].to_list() == ["600000", "1"]
    assert got["score"].dtype == pl.Float64 and got["score"].to_list() == [1.0, 2.0]
    # a NaN score is no score
    nan = CANONICAL.with_columns(score=pl.Series([0.5, float("nan"), -1.0]))
    assert_frame_equal(check_signal(nan), CANONICAL)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (
            CANONICAL.drop("score").with_columns(pred=pl.lit(1.0)),
            r"^f\.parquet: no score column \(columns: instrument, date, pred\)",
        ),
        (
            CANONICAL.with_columns(date=pl.Series(["2021-01-04", "04/01/2021", "x"])),
            r"^f\.parquet: column date, row 2: '04/01/2021' is not a date \(2 such rows\); "
            "write dates as YYYY-MM-DD$",
        ),
        (
            CANONICAL.with_columns(date=pl.Series(["2021-01-04", "2021-02-30", "2021-01-05"])),
            r"column date, row 2: '2021-02-30' is not a date",
        ),
        (
            CANONICAL.with_columns(date=pl.Series([20210104, 20210104, 20210105])),
            r"column date is Int64; give dates, or text as YYYY-MM-DD \(first value: 20210104\)",
        ),
        (
            CANONICAL.with_columns(date=pl.Series([date(2021, 1, 4), None, None])),
            r"column date, row 2: missing \(2 rows have no date\)",
        ),
        (
            CANONICAL.with_columns(instrument=pl.Series(["A", None, "B"])),
            r"column instrument, row 2: missing",
        ),
        (
            CANONICAL.with_columns(instrument=pl.Series([1.5, 2.0, 3.0])),
            r"column instrument is Float64; give the store's instrument ids as text",
        ),
        (
            CANONICAL.with_columns(score=pl.Series(["0.5", "high", None])),
            r"column score, row 2: 'high' is not a number \(1 such rows\)",
        ),
        (
            CANONICAL.with_columns(score=pl.Series([0.5, float("inf"), 1.0])),
            r"column score, row 2: inf \(1 infinite scores\)",
        ),
        (CANONICAL.with_columns(score=pl.lit(True)), r"column score is Boolean; give numbers"),
        (CANONICAL.clear(), r"^f\.parquet: no rows"),
    ],
)
def test_bad_signals_are_one_line_errors(frame: pl.DataFrame, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        check_signal(frame, source="f.parquet")
    assert "\n" not in str(caught.value)


def test_files_are_read_as_parquet_arrow_or_csv(tmp_path: Path) -> None:
    csv = tmp_path / "signal.csv"
    csv.write_text("instrument,date,score\n000001,2021-01-04,0.5\n000002,2021-01-04,\n")
    got = load_signal(csv)
    assert got["instrument"].to_list() == ["000001", "000002"]  # the zeros are kept
    assert got["date"].to_list() == [date(2021, 1, 4)] * 2
    assert got["score"].to_list() == [0.5, None]
    text = tmp_path / "text.parquet"
    CANONICAL.with_columns(pl.col("date").cast(pl.String)).write_parquet(text)
    assert_frame_equal(load_signal(text), CANONICAL)
    with pytest.raises(DataError, match=r"nope\.parquet: no such file"):
        load_signal(tmp_path / "nope.parquet")
    with pytest.raises(DataError, match=r"signal\.parquet: not a readable Parquet file"):
        load_signal(csv.rename(tmp_path / "signal.parquet"))
    arrow = tmp_path / "signal.arrow"
    CANONICAL.write_ipc(arrow)
    assert_frame_equal(load_signal(arrow), CANONICAL)
    with pytest.raises(DataError, match=r"wrong\.arrow: not a readable Arrow IPC file"):
        CANONICAL.write_parquet(tmp_path / "wrong.arrow")
        load_signal(tmp_path / "wrong.arrow")
    with pytest.raises(UsageError, match=r"bad\.csv: column date, row 1: 'monday'"):
        (tmp_path / "bad.csv").write_text("instrument,date,score\nA,monday,1\n")
        load_signal(tmp_path / "bad.csv")


def test_a_text_dated_signal_backtests_as_the_dated_one(
    market: tuple[Store, pl.DataFrame],
) -> None:
    store, signal = market
    dated = run_backtest(store, signal, None, topk=5, n_drop=1, analyze_signal=False)
    text = signal.with_columns(pl.col("date").dt.strftime("%Y-%m-%d"))
    got = run_backtest(store, text, None, topk=5, n_drop=1, analyze_signal=False)
    assert_frame_equal(got.returns, dated.returns)
    assert got.metrics["orders_filled"] > 0


def test_duplicate_rows_one_score_is_one_score_two_are_refused(
    market: tuple[Store, pl.DataFrame],
) -> None:
    store, signal = market
    once = run_backtest(store, signal, None, topk=5, n_drop=1, analyze_signal=False)
    twice = run_backtest(store, pl.concat([signal, signal.head(300)]), None, topk=5, n_drop=1,
                         analyze_signal=False)  # fmt: skip
    assert_frame_equal(twice.returns, once.returns)
    # a second, different score for one instrument on one day: which one is meant?
    row = signal.drop_nulls("score").row(40, named=True)
    other = pl.DataFrame([{**row, "score": row["score"] + 1.0}], schema=signal.schema)
    with pytest.raises(UsageError) as caught:
        run_backtest(store, pl.concat([signal, other]), None, source="preds.parquet")
    message = str(caught.value)
    assert message.startswith("preds.parquet: 1 rows give an instrument a second, different")
    assert f"{row['instrument']} on {row['date']}" in message
    assert f"{row['score'] + 1.0:g} and {row['score']:g}" in message or (
        f"{row['score']:g} and {row['score'] + 1.0:g}" in message
    )


def test_datetime_dates_at_any_time_of_day_are_their_dates(
    market: tuple[Store, pl.DataFrame],
) -> None:
    store, signal = market
    dated = run_backtest(store, signal, None, topk=5, n_drop=1, analyze_signal=False)
    at_close = signal.with_columns(
        (pl.col("date").cast(pl.Datetime("us")) + pl.duration(hours=16)).alias("date")
    )
    got = run_backtest(store, at_close, None, topk=5, n_drop=1, analyze_signal=False)
    np.testing.assert_array_equal(got.returns["return_net"], dated.returns["return_net"])
