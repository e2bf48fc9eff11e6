"""Retractions: a wrong key (ex-date, publication date, bar date) can be withdrawn, and the
withdrawal is history like any other commit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl

from quarry.data import Store, ingest_file, ingest_frame, read_bars, table_spec
from tests.helpers import bars_frame


def test_wrong_split_date_is_retracted(store: Store, write_csv: Callable[[str, str], Path]) -> None:
    days = ["2020-01-02", "2020-01-03", "2020-01-06"]
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", d, c) for d, c in zip(days, [100.0, 100.0, 50.0], strict=True)]),
        knowledge_time="2020-01-07",
    )
    head = "instrument,ex_date,kind,ratio,amount\n"
    ingest_file(
        store,
        "actions",
        write_csv("a1.csv", head + "A,2020-01-03,split,2,"),
        knowledge_time="2020-01-07",
    )
    fixed = ingest_file(
        store,
        "actions",
        write_csv("a2.csv", head + "A,2020-01-06,split,2,"),
        knowledge_time="2020-01-08",
        replace=True,
    )
    assert (fixed.new, fixed.retracted) == (1, 1)
    assert read_bars(store, ["factor"], adjust="adjusted")["factor"].to_list() == [1.0, 1.0, 2.0]
    # What was known before the fix is still what it was: the split on the wrong day.
    early = read_bars(store, ["factor"], adjust="adjusted", as_of="2020-01-07T12:00")
    assert early["factor"].to_list() == [1.0, 2.0, 2.0]


def test_wrong_publication_date_is_retracted(store: Store) -> None:
    days = ["2020-01-10", "2020-02-10", "2020-03-10"]
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", d, 1.0) for d in days]),
        knowledge_time="2020-04-01",
    )
    spec = table_spec("fundamentals")
    row = {
        "instrument": ["A"],
        "field": ["eps"],
        "period_end": [date(2019, 12, 31)],
        "value": [2.0],
    }
    ingest_frame(
        store,
        spec,
        pl.DataFrame({**row, "knowledge_date": [date(2020, 1, 10)]}),
        knowledge_time="2020-04-01",
    )
    # The vendor published it on 2020-02-10, not 2020-01-10: the early date leaked the future.
    ingest_frame(
        store,
        spec,
        pl.DataFrame({**row, "knowledge_date": [date(2020, 2, 10)]}),
        knowledge_time="2020-04-02",
        replace=True,
    )
    assert read_bars(store, ["eps"])["eps"].to_list() == [None, 2.0, 2.0]
    assert read_bars(store, ["eps"], as_of="2020-04-01T12:00")["eps"].to_list() == [2.0, 2.0, 2.0]


def test_replace_retracts_bars_only_within_the_files_dates(store: Store) -> None:
    bars = table_spec("bars")
    rows = [(i, f"2020-01-{d:02d}", 1.0) for i in ("A", "B") for d in (2, 3, 6, 7)]
    ingest_frame(store, bars, bars_frame(rows), knowledge_time="2020-02-01")
    # A file for A covering Jan 2-6 that lacks Jan 3: only A's Jan 3 goes.
    result = ingest_frame(
        store,
        bars,
        bars_frame([("A", "2020-01-02", 1.0), ("A", "2020-01-06", 2.0)]),
        knowledge_time="2020-02-02",
        replace=True,
    )
    assert result.retracted == 1  # A 2020-01-03; A's Jan 7 lies outside the file's dates
    got = read_bars(store, ["close"]).filter(pl.col("instrument") == "A")
    assert [str(d) for d in got["date"]] == ["2020-01-02", "2020-01-06", "2020-01-07"]
    assert got["close"].to_list() == [1.0, 2.0, 1.0]
    assert read_bars(store, ["close"]).filter(pl.col("instrument") == "B").height == 4
    assert read_bars(store, ["close"], as_of="2020-02-01T12:00").height == 8
