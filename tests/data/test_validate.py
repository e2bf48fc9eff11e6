"""Bad vendor files: every kind of problem is reported by line, column and value, and the
store is left exactly as it was."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
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
    # Prices outside the bar's own range: each kind on its own line, with the other value.
    "close_above_high": (
        "C,2020-01-06,1,2,1,1,1\nC,2020-01-07,1,2,1,2.5,1\nC,2020-01-08,1,2,1,3,1",
        ["line 3", "'close'", "close above high: '2.5' (high 2.0)", "2 rows affected: lines 3, 4"],
    ),
    "close_below_low": (
        "C,2020-01-06,1,2,1,0.5,1",
        ["line 2", "'close'", "close below low: '0.5' (low 1.0)", "fix the bar"],
    ),
    "open_above_high": ("C,2020-01-06,2.01,2,1,1,1", ["line 2", "'open'", "open above high"]),
    "open_below_low": ("C,2020-01-06,0.9,2,1,1,1", ["line 2", "'open'", "open below low"]),
    # The file is known at 2020-02-01: a bar of a later day cannot be in it.
    "dated_after_its_knowledge_time": (
        "C,2020-01-31,1,2,1,1,1\nC,2020-02-03,1,2,1,1,1",
        [
            "line 3",
            "'date'",
            "dated after the knowledge time 2020-02-01T00:00:00+00:00",
            "'2020-02-03'",
            "give the --knowledge-time when the file was delivered",
        ],
    ),
    # Two rows of one key with different values: nothing says which holds.
    "conflicting_duplicate": (
        "C,2020-01-06,1,2,1,1,1\nC,2020-01-06,1,2,1,1.5,1",
        ["line 2", "duplicate (instrument, date) with different values", "also on line 3"],
    ),
    "exact_duplicate": (
        "C,2020-01-06,1,2,1,1,1\nD,2020-01-06,1,2,1,1,1\nC,2020-01-06,1,2,1,1.0,1",
        ["line 4", "an exact copy: '2020-01-06' (of line 2)", "1 row affected", "keeps the first"],
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


def test_a_fundamental_cannot_be_known_after_its_file(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    head = "instrument,field,period_end,knowledge_date,value\n"
    late = write_csv(
        "late.csv", head + "A,eps,2023-12-31,2024-02-01,1\nA,eps,2030-12-31,2031-02-01,2"
    )
    with pytest.raises(BadInputError) as err:
        ingest_file(store, "fundamentals", late, knowledge_time="2024-03-01")
    assert err.value.problems == [
        f"{late}: line 3, column 'knowledge_date': knowledge_date after the knowledge time "
        "2024-03-01T00:00:00+00:00 (known after the file holding it was delivered): "
        "'2031-02-01' (1 row affected); give the --knowledge-time when the file was delivered, "
        "or fix the knowledge_date"
    ]
    assert store.commits() == []
    # Published on the day the file was delivered: fine.
    ok = write_csv("ok.csv", head + "A,eps,2023-12-31,2024-03-01,1")
    assert ingest_file(store, "fundamentals", ok, knowledge_time="2024-03-01T18:00").new == 1


ACTIONS = "instrument,ex_date,kind,ratio,amount\n"


def test_a_dividend_at_or_above_the_previous_close_is_refused(
    seeded: Store, write_csv: Callable[[str, str], Path]
) -> None:
    """A's closes are 10.5 (Jan 2) and 10.8 (Jan 3): a dividend going ex on Jan 3 is paid
    from 10.5; one of 10.5 would make the adjustment factor infinite."""
    path = write_csv(
        "divs.csv",
        ACTIONS + "A,2020-01-03,dividend,,0.2\nA,2020-01-03,split,2,\nA,2020-01-06,dividend,,10.8",
    )
    path_bad = write_csv("bad_divs.csv", ACTIONS + "A,2020-01-03,dividend,,10.5")
    before = _state(seeded)
    with pytest.raises(BadInputError) as err:
        ingest_file(seeded, "actions", path_bad, knowledge_time="2020-01-05")
    assert err.value.problems == [
        f"{path_bad}: line 2, column 'amount': dividend at or above the previous close in the "
        "store: '10.5' (the close before it is 10.5) (1 row affected); a dividend is cash per "
        "share and must be below the price it is paid from: check the amount (not a yield, a "
        "total or in another currency) and the ex-date"
    ]
    assert _state(seeded)[0] == before[0]
    with pytest.raises(BadInputError, match=r"line 4, column 'amount'.*close before it is 10\.8"):
        ingest_file(seeded, "actions", path, knowledge_time="2020-01-05")
    assert _state(seeded)[0] == before[0]
    # The good rows go in with --skip-bad, and adjusted reads work.
    result = ingest_file(seeded, "actions", path, knowledge_time="2020-01-05", skip_bad=True)
    assert (result.new, result.rejected) == (2, 1)
    adjusted = read_bars(seeded, ["close"], adjust="adjusted").filter(pl.col("instrument") == "A")
    # Jan 3 on: the split (x2) and the dividend (10.5 / (10.5 - 0.2)).
    np.testing.assert_allclose(adjusted["close"].to_list(), [10.5, 10.8 * 2 * 10.5 / 10.3])


def test_bars_below_a_known_dividend_are_refused(
    seeded: Store, write_csv: Callable[[str, str], Path]
) -> None:
    """The dividend came first (its closes were not known yet): the bars it would be paid
    from are then checked against it."""
    ingest_file(
        seeded,
        "actions",
        write_csv("div.csv", ACTIONS + "E,2020-01-08,dividend,,5"),
        knowledge_time="2020-01-05",
    )
    path = write_csv(
        "e.csv",
        "instrument,date,open,high,low,close,volume\n"
        "E,2020-01-06,6,6,4,5.5,10\nE,2020-01-07,6,6,4,4.9,10\nE,2020-01-08,5,6,4,5,10",
    )
    before = _state(seeded)
    with pytest.raises(BadInputError) as err:
        ingest_file(seeded, "bars", path, knowledge_time="2020-01-09")
    assert err.value.problems == [
        f"{path}: line 3, column 'close': close at or below a dividend the store knows (paid "
        "from this close): '4.9' (at or below the dividend 5 going ex on 2020-01-08) (1 row "
        "affected); a dividend is cash per share and must be below the price it is paid from: "
        "check the amount (not a yield, a total or in another currency) and the ex-date"
    ]
    assert _state(seeded)[0] == before[0]
    # The row before the ex-date is what counts: the same close a day earlier is fine.
    ok = path.with_name("ok.csv")
    ok.write_text(path.read_text().replace("2020-01-07,6,6,4,4.9", "2020-01-07,6,6,4,5.9"))
    ingest_file(seeded, "bars", ok, knowledge_time="2020-01-09")
    assert read_bars(seeded, ["close"], adjust="adjusted").height == 6


def test_skip_bad_keeps_one_copy_of_an_exact_duplicate(
    seeded: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv(
        "dups.csv",
        "instrument,date,open,high,low,close,volume\n"
        "C,2020-01-06,1,2,1,1.5,10\n"  # line 2
        "D,2020-01-06,1,2,1,2,10\n"  # line 3: conflicts with line 5
        "C,2020-01-06,1,2,1,1.50,10\n"  # line 4: the same values as line 2
        "D,2020-01-06,1,3,1,2.5,10\n",  # line 5
    )
    result = ingest_file(seeded, "bars", path, skip_bad=True, knowledge_time="2020-02-01")
    assert (result.new, result.rejected) == (1, 3)
    rejects = pl.read_csv(f"{path}.rejected.csv", infer_schema=False)
    assert rejects.select("line", "instrument").rows() == [("3", "D"), ("4", "C"), ("5", "D")]
    assert rejects["reason"].to_list() == [
        "date: duplicate (instrument, date) with different values (conflicting rows)",
        "date: duplicate (instrument, date) row, an exact copy",
        "date: duplicate (instrument, date) with different values (conflicting rows)",
    ]
    got = read_bars(seeded, ["close"]).filter(pl.col("instrument").is_in(["C", "D"]))
    assert got.rows() == [("C", date(2020, 1, 6), 1.5)]


def test_all_is_not_a_name_for_a_stored_universe(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    from quarry.exceptions import UsageError

    path = write_csv("u.csv", "instrument,start,end\nA,2020-01-01,")
    for name in ("all", "ALL"):
        with pytest.raises(UsageError, match=f"'{name}' is the built-in universe of every"):
            ingest_file(store, "universe", path, universe=name)
    assert store.commits() == []


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
