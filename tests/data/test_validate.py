"""Bad vendor files: every kind of problem is reported by line, column and value, and the
store is left exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, ingest_file, read_bars
from quarry.exceptions import BadInputError

GOOD = """instrument,date,open,high,low,close,volume
A,2020-01-02,10,11,9,10.5,1000
A,2020-01-03,10.5,11,10,10.8,1200
B,2020-01-02,20,21,19,20.5,500
"""


@pytest.fixture
def seeded(store: Store, write_csv: Callable[[str, str], Path]) -> Store:
    ingest_file(store, "bars", write_csv("good.csv", GOOD), knowledge_time="2020-01-04")
    return store


def _state(store: Store) -> tuple[list[object], pl.DataFrame]:
    return [c.as_dict() for c in store.commits()], read_bars(store, ["close", "volume"])


# (file body after the header, expected fragments of the one problem line)
CASES = {
    "non_numeric": (
        "A,2020-01-06,10,11,9,ten,1000",
        ["line 2", "'close'", "not a number", "'ten'", "1 row"],
    ),
    "nan_required": (
        "A,2020-01-06,10,11,9,NaN,1000\nB,2020-01-06,10,11,9,,1000",
        ["line 2", "'close'", "missing value", "2 rows"],
    ),
    "duplicate": (
        "C,2020-01-06,1,2,1,1,1\nC,2020-01-06,1,2,1,1.5,1",
        ["line 2", "duplicate (instrument, date)", "2 rows"],
    ),
    "high_below_low": ("C,2020-01-06,1,0.5,1,1,1", ["line 2", "'high'", "high below low", "'0.5'"]),
    "negative_price": (
        "C,2020-01-06,1,2,1,1,1\nC,2020-01-07,-1,2,1,1,1",
        ["line 3", "'open'", "negative value", "'-1'"],
    ),
    "negative_volume": (
        "C,2020-01-06,1,2,1,1,-5",
        ["line 2", "'volume'", "negative value", "'-5'"],
    ),
    "bad_date": (
        "C,2020-13-45,1,2,1,1,1",
        ["line 2", "'date'", "unparseable date", "'2020-13-45'"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_input_fails_whole_and_changes_nothing(
    case: str, seeded: Store, write_csv: Callable[[str, str], Path]
) -> None:
    body, fragments = CASES[case]
    path = write_csv(f"{case}.csv", "instrument,date,open,high,low,close,volume\n" + body)
    before = _state(seeded)
    with pytest.raises(BadInputError) as err:
        ingest_file(seeded, "bars", path, knowledge_time="2020-02-01")
    assert len(err.value.problems) == 1
    line = err.value.problems[0]
    assert line.startswith(str(path))
    for fragment in fragments:
        assert fragment in line
    after = _state(seeded)
    assert after[0] == before[0]
    assert_frame_equal(after[1], before[1])


def test_missing_column(seeded: Store, write_csv: Callable[[str, str], Path]) -> None:
    path = write_csv("nocol.csv", "instrument,date,open,high,low,close\nA,2020-01-06,1,2,1,1")
    before = _state(seeded)
    with pytest.raises(BadInputError, match="missing column 'volume'"):
        ingest_file(seeded, "bars", path)
    assert _state(seeded)[0] == before[0]


def test_unknown_column_is_not_silently_dropped(
    seeded: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv(
        "extra.csv", GOOD.replace("volume\n", "volume,note\n", 1).replace("1000\n", "1000,x\n", 1)
    )
    with pytest.raises(BadInputError, match="unknown column 'note'"):
        ingest_file(seeded, "bars", path)


def test_several_kinds_are_all_reported(
    seeded: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv(
        "many.csv",
        "instrument,date,open,high,low,close,volume\n"
        "C,2020-01-06,1,2,1,abc,1\nC,2020-01-07,1,2,1,1,-1\nC,bad,1,2,1,1,1",
    )
    with pytest.raises(BadInputError) as err:
        ingest_file(seeded, "bars", path)
    kinds = " ".join(err.value.problems)
    assert "not a number" in kinds and "negative value" in kinds and "unparseable date" in kinds
    assert len(err.value.problems) == 3


def test_skip_bad_commits_good_rows_and_writes_rejects(
    seeded: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv(
        "mixed.csv",
        "instrument,date,open,high,low,close,volume\n"
        "C,2020-01-06,1,2,1,1.5,10\nC,2020-01-07,1,2,1,oops,10\nD,2020-01-06,1,2,1,2.5,-3",
    )
    result = ingest_file(seeded, "bars", path, skip_bad=True, knowledge_time="2020-02-01")
    assert (result.new, result.rejected) == (1, 2)
    rejects = pl.read_csv(f"{path}.rejected.csv", infer_schema=False)
    assert rejects["line"].to_list() == ["3", "4"]
    assert "close: not a number" in rejects["reason"][0]
    assert "volume: negative value" in rejects["reason"][1]
    closes = read_bars(seeded, ["close"]).filter(pl.col("instrument").is_in(["C", "D"]))
    assert closes["close"].to_list() == [1.5]


def test_parquet_input_reports_rows(seeded: Store, tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "instrument": ["C", "C"],
            "date": ["2020-01-06", "2020-01-07"],
            "open": [1.0, 1.0],
            "high": [2.0, 2.0],
            "low": [1.0, 1.0],
            "close": [1.0, float("nan")],
            "volume": [1.0, 1.0],
        }
    )
    path = tmp_path / "bars.parquet"
    frame.write_parquet(path)
    with pytest.raises(BadInputError, match=r"row 2, column 'close': missing value"):
        ingest_file(seeded, "bars", path)


def test_reingesting_the_same_file_commits_nothing(
    seeded: Store, write_csv: Callable[[str, str], Path]
) -> None:
    before = seeded.commits()
    result = ingest_file(seeded, "bars", write_csv("again.csv", GOOD), knowledge_time="2020-03-01")
    assert result.commit is None and result.unchanged == 3
    assert seeded.commits() == before


@pytest.mark.parametrize(
    ("table", "text", "fragment"),
    [
        (
            "actions",
            "instrument,ex_date,kind,ratio,amount\nA,2020-01-03,merger,2,",
            "not one of split|dividend",
        ),
        (
            "actions",
            "instrument,ex_date,kind,ratio,amount\nA,2020-01-03,split,,",
            "split without a ratio",
        ),
        (
            "fundamentals",
            "instrument,field,period_end,knowledge_date,value\nA,eps,2020-03-31,2020-03-01,1",
            "published before the period ended",
        ),
        (
            "instruments",
            "instrument,list_date,delist_date\nA,2020-01-01,2019-01-01",
            "delist_date before list_date",
        ),
    ],
)
def test_other_tables_validate_their_values(
    table: str, text: str, fragment: str, store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    with pytest.raises(BadInputError, match=fragment):
        ingest_file(store, table, write_csv(f"{table}.csv", text))
    assert store.commits() == []
