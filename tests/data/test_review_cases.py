"""Edge cases that must give a clear error or the documented default, never a traceback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from quarry.data import Store, ingest_file, ingest_frame, read_bars, table_spec
from quarry.exceptions import BadInputError, DataError, UsageError
from tests.conftest import bars_frame

HEADER = "instrument,date,open,high,low,close,volume,vwap"


def test_infinite_values_are_rejected(store: Store, write_csv: Callable[[str, str], Path]) -> None:
    path = write_csv(
        "inf.csv", f"{HEADER}\nA,2020-01-02,1,inf,1,1,1,1\nA,2020-01-03,1,2,1,1,1e400,1"
    )
    with pytest.raises(BadInputError) as err:
        ingest_file(store, "bars", path)
    text = str(err.value)
    assert "column 'high': not a finite number: 'inf'" in text
    assert "column 'volume': not a finite number: '1e400'" in text
    assert store.commits() == []


def test_nan_in_an_optional_column_is_stored_as_empty(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    ingest_file(store, "bars", write_csv("nan.csv", f"{HEADER}\nA,2020-01-02,1,2,1,1,1,NaN"))
    assert read_bars(store, ["vwap"])["vwap"].to_list() == [None]


def test_parquet_flags_and_lists_are_not_values(store: Store, tmp_path: Path) -> None:
    base = {
        "instrument": ["A"],
        "date": [date(2020, 1, 2)],
        "open": [1.0],
        "high": [2.0],
        "low": [1.0],
    }
    flags = tmp_path / "flags.parquet"
    pl.DataFrame({**base, "close": [True], "volume": [1.0]}).write_parquet(flags)
    with pytest.raises(BadInputError, match="column 'close': not a number"):
        ingest_file(store, "bars", flags)
    lists = tmp_path / "lists.parquet"
    pl.DataFrame({**base, "close": [[1.0, 2.0]], "volume": [1.0]}).write_parquet(lists)
    with pytest.raises(BadInputError, match="column 'close' holds List"):
        ingest_file(store, "bars", lists)


def test_future_knowledge_time_is_refused(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv("b.csv", f"{HEADER}\nA,2020-01-02,1,2,1,1,1,1")
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    with pytest.raises(UsageError, match="in the future"):
        ingest_file(store, "bars", path, knowledge_time=future)
    assert store.commits() == []


def test_skip_bad_is_refused_for_universe_files(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv("u.csv", "instrument,start,end\nA,2020-01-01,\nB,bad,")
    with pytest.raises(UsageError, match="--skip-bad does not apply to universe"):
        ingest_file(store, "universe", path, universe="u", skip_bad=True)


def test_dividend_above_the_price_is_a_clear_error(store: Store) -> None:
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", "2020-01-02", 10.0), ("A", "2020-01-03", 9.0)]),
        knowledge_time="2020-02-01",
    )
    actions = pl.DataFrame(
        {
            "instrument": ["A"],
            "ex_date": [date(2020, 1, 3)],
            "kind": ["dividend"],
            "ratio": [None],
            "amount": [12.0],
        },
        schema_overrides={"ratio": pl.Float64},
    )
    ingest_frame(store, table_spec("corporate_actions"), actions, knowledge_time="2020-02-01")
    with pytest.raises(
        DataError, match=r"dividend 12\.0 of A on 2020-01-03 is not below the previous close 10\.0"
    ):
        read_bars(store, ["close"], adjust="adjusted")


def test_empty_valid_from_defaults_to_list_date(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv("i.csv", "instrument,list_date,valid_from,industry\nA,2010-01-04,,Tech")
    ingest_file(store, "instruments", path)
    got = store.scan("instruments")
    assert got is not None
    assert got.select("valid_from").collect().item() == date(2010, 1, 4)


def test_unwritable_store_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(DataError) as err:
        ingest_frame(
            Store(blocker / "store"), table_spec("bars"), bars_frame([("A", "2020-01-02", 1.0)])
        )
    assert "\n" not in str(err.value)
