"""Each bias the store must prevent, checked against hand-worked cases."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, ingest_frame, members, read_bars, table_spec
from quarry.exceptions import UsageError
from tests.helpers import bars_frame


def _close(store: Store, as_of: str | None = None) -> dict[tuple[str, date], float]:
    df = read_bars(store, ["close"], as_of=as_of)
    return {(r["instrument"], r["date"]): r["close"] for r in df.to_dicts()}


def test_correction_is_history_not_overwrite(store: Store) -> None:
    bars = table_spec("bars")
    ingest_frame(
        store,
        bars,
        bars_frame(
            [("A", "2020-01-02", 10.0), ("A", "2020-01-03", 11.0), ("B", "2020-01-02", 5.0)]
        ),
        knowledge_time="2020-01-04",
    )
    result = ingest_frame(
        store,
        bars,
        bars_frame([("A", "2020-01-03", 11.5), ("B", "2020-01-02", 5.0)]),
        knowledge_time="2020-02-01",
    )
    assert (result.new, result.corrected, result.unchanged) == (0, 1, 1)
    before = _close(store, as_of="2020-01-31")
    after = _close(store, as_of="2020-02-01")
    assert before[("A", date(2020, 1, 3))] == 11.0
    assert after[("A", date(2020, 1, 3))] == 11.5
    assert _close(store) == after
    # Before the first commit nothing was known at all.
    assert _close(store, as_of="2020-01-03") == {}
    # The corrected row and the original are both stored: nothing was overwritten.
    raw = store.scan_raw("bars")
    assert raw is not None
    assert raw.filter(pl.col("instrument") == "A").collect().height == 3


def test_backfill_with_an_earlier_knowledge_time(store: Store) -> None:
    """A commit that arrives later but was known earlier still orders by knowledge time."""
    bars = table_spec("bars")
    ingest_frame(store, bars, bars_frame([("A", "2020-01-02", 12.0)]), knowledge_time="2020-03-01")
    ingest_frame(store, bars, bars_frame([("A", "2020-01-02", 10.0)]), knowledge_time="2020-01-05")
    assert _close(store, "2020-02-01") == {("A", date(2020, 1, 2)): 10.0}
    assert _close(store) == {("A", date(2020, 1, 2)): 12.0}


def test_bar_dated_after_as_of_is_invisible(store: Store) -> None:
    """Even if a vendor backfilled it with an early knowledge time, a bar for a later date
    could not have been known before that date."""
    frame = bars_frame([("A", "2020-01-02", 10.0), ("A", "2020-06-01", 20.0)])
    ingest_frame(store, table_spec("bars"), frame, knowledge_time="2019-12-31")
    assert set(_close(store, as_of="2020-03-01")) == {("A", date(2020, 1, 2))}


def test_fundamental_visible_only_from_its_knowledge_date(store: Store) -> None:
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame(
            [("A", d, 10.0) for d in ("2020-03-30", "2020-03-31", "2020-05-14", "2020-05-15")]
        ),
        knowledge_time="2020-06-01",
    )
    fundamentals = pl.DataFrame(
        {
            "instrument": ["A"],
            "field": ["eps"],
            "period_end": [date(2020, 3, 31)],
            "knowledge_date": [date(2020, 5, 15)],
            "value": [1.25],
        }
    )
    ingest_frame(store, table_spec("fundamentals"), fundamentals, knowledge_time="2020-06-01")
    df = read_bars(store, ["eps"])
    eps = dict(zip(df["date"].to_list(), df["eps"].to_list(), strict=True))
    # Not on the period end, not the day before publication: only from the knowledge date.
    assert eps == {
        date(2020, 3, 30): None,
        date(2020, 3, 31): None,
        date(2020, 5, 14): None,
        date(2020, 5, 15): 1.25,
    }
    # Read as of a time before publication, the value does not exist.
    early = read_bars(store, ["eps"], as_of="2020-05-14T23:59:59")
    assert early["eps"].null_count() == early.height


def test_restatement_of_an_old_period_does_not_displace_a_newer_one(store: Store) -> None:
    days = ["2020-05-01", "2020-08-20", "2020-09-10", "2020-11-01"]
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", d, 10.0) for d in days]),
        knowledge_time="2021-01-01",
    )
    rows = [
        ("2020-03-31", "2020-04-30", 1.0),  # Q1
        ("2020-06-30", "2020-08-15", 2.0),  # Q2
        ("2020-03-31", "2020-09-01", 1.1),  # Q1 restated after Q2 was out
        ("2020-06-30", "2020-10-15", 2.2),  # Q2 restated
    ]
    fundamentals = pl.DataFrame(
        {
            "instrument": "A",
            "field": "eps",
            "period_end": [date.fromisoformat(r[0]) for r in rows],
            "knowledge_date": [date.fromisoformat(r[1]) for r in rows],
            "value": [r[2] for r in rows],
        }
    )
    ingest_frame(store, table_spec("fundamentals"), fundamentals, knowledge_time="2021-01-01")
    got = read_bars(store, ["eps"])["eps"].to_list()
    assert got == [1.0, 2.0, 2.0, 2.2]


def test_delisted_instrument_present_in_its_span_and_absent_after(store: Store) -> None:
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame(
            [("LIVE", d, 10.0) for d in ("2020-01-02", "2020-01-03", "2020-01-06")]
            + [("DEAD", d, 3.0) for d in ("2020-01-02", "2020-01-03")]
        ),
        knowledge_time="2020-02-01",
    )
    universe = pl.DataFrame(
        {
            "universe": "idx",
            "instrument": ["LIVE", "DEAD"],
            "start": [date(2020, 1, 1), date(2020, 1, 1)],
            "end": [None, date(2020, 1, 3)],
        }
    )
    ingest_frame(store, table_spec("universe"), universe, knowledge_time="2020-02-01")
    df = read_bars(store, ["close"], universe="idx")
    on = lambda d: sorted(df.filter(pl.col("date") == d)["instrument"].to_list())  # noqa: E731
    assert on(date(2020, 1, 3)) == ["DEAD", "LIVE"]  # a dead company is kept while a member
    assert on(date(2020, 1, 6)) == ["LIVE"]


def test_universe_spans_with_a_gap(store: Store) -> None:
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", f"2020-01-{d:02d}", 1.0) for d in (2, 3, 6, 7, 8)]),
        knowledge_time="2020-02-01",
    )
    spans = pl.DataFrame(
        {
            "universe": "u",
            "instrument": ["A", "A"],
            "start": [date(2020, 1, 2), date(2020, 1, 7)],
            "end": [date(2020, 1, 3), None],
        }
    )
    ingest_frame(store, table_spec("universe"), spans, knowledge_time="2020-02-01")
    got = read_bars(store, ["close"], universe="u")["date"].to_list()
    assert got == [date(2020, 1, d) for d in (2, 3, 7, 8)]


def test_universe_file_is_a_snapshot_known_from_its_time(store: Store) -> None:
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", "2020-01-02", 1.0), ("B", "2020-01-02", 1.0)]),
        knowledge_time="2020-01-03",
    )
    u = table_spec("universe")
    ingest_frame(
        store,
        u,
        pl.DataFrame(
            {
                "universe": "u",
                "instrument": ["A", "B"],
                "start": [date(2020, 1, 1)] * 2,
                "end": [None, None],
            },
            schema_overrides={"end": pl.Date},
        ),
        knowledge_time="2020-01-03",
    )
    ingest_frame(
        store,
        u,
        pl.DataFrame(
            {"universe": "u", "instrument": ["A"], "start": [date(2020, 1, 1)], "end": [None]},
            schema_overrides={"end": pl.Date},
        ),
        knowledge_time="2020-03-01",
    )
    assert read_bars(store, ["close"], universe="u", as_of="2020-02-01")[
        "instrument"
    ].to_list() == ["A", "B"]
    assert read_bars(store, ["close"], universe="u")["instrument"].to_list() == ["A"]


def test_universe_all_is_every_instrument_as_known(store: Store) -> None:
    """``all`` needs no universe file: every instrument's bars known at as_of, a delisted
    one on the days it traded; its spans run from the first bar to the last."""
    bars = table_spec("bars")
    ingest_frame(
        store,
        bars,
        bars_frame(
            [("LIVE", d, 10.0) for d in ("2020-01-02", "2020-01-03", "2020-01-06")]
            + [("DEAD", d, 3.0) for d in ("2020-01-02", "2020-01-03")]
        ),
        knowledge_time="2020-01-06T22:00",
    )
    ingest_frame(store, bars, bars_frame([("NEW", "2020-01-06", 5.0)]), knowledge_time="2020-01-08")
    got = read_bars(store, ["close"], universe="all", as_of="2020-01-07")
    assert got.select("instrument", "date").rows() == [
        ("DEAD", date(2020, 1, 2)),
        ("DEAD", date(2020, 1, 3)),
        ("LIVE", date(2020, 1, 2)),
        ("LIVE", date(2020, 1, 3)),
        ("LIVE", date(2020, 1, 6)),
    ]
    assert_frame_equal(read_bars(store, ["close"], universe="all"), read_bars(store, ["close"]))
    assert members(store, "all", as_of="2020-01-07").sort("instrument").rows() == [
        ("DEAD", date(2020, 1, 2), date(2020, 1, 3)),
        ("LIVE", date(2020, 1, 2), None),
    ]
    assert members(store, "all", as_of="2020-01-06").height == 0  # nothing known yet


def test_an_unknown_universe_names_the_built_in_one(store: Store) -> None:
    ingest_frame(store, table_spec("bars"), bars_frame([("A", "2020-01-02", 1.0)]))
    with pytest.raises(UsageError, match="no universe named 'sp' known; known universes: all"):
        read_bars(store, ["close"], universe="sp")


def test_split_does_not_leak_backwards(store: Store) -> None:
    # Raw prices halve at a 2-for-1 split on 2018-06-01.
    bars = table_spec("bars")
    ingest_frame(
        store, bars, bars_frame([("A", "2015-06-01", 40.0)]), knowledge_time="2015-06-01T22:00"
    )
    later = [("A", "2018-05-31", 100.0), ("A", "2018-06-01", 50.5), ("A", "2018-06-04", 51.0)]
    ingest_frame(store, bars, bars_frame(later), knowledge_time="2018-06-05")
    actions = pl.DataFrame(
        {
            "instrument": ["A"],
            "ex_date": [date(2018, 6, 1)],
            "kind": ["split"],
            "ratio": [2.0],
            "amount": [None],
        },
        schema_overrides={"amount": pl.Float64},
    )
    ingest_frame(store, table_spec("corporate_actions"), actions, knowledge_time="2018-06-10")
    adj = read_bars(store, ["close", "volume", "factor"], adjust="adjusted")
    assert adj["close"].to_list() == [40.0, 100.0, 101.0, 102.0]
    assert adj["factor"].to_list() == [1.0, 1.0, 2.0, 2.0]
    assert adj["volume"].to_list() == [1000.0, 1000.0, 500.0, 500.0]
    # A read as of 2015 is unchanged by the 2018 split, and equals the raw price.
    early = read_bars(store, ["close"], adjust="adjusted", as_of="2015-06-02")
    assert early["close"].to_list() == [40.0]
    # Before the split was known, it is not applied at all.
    before = read_bars(store, ["close"], adjust="adjusted", as_of="2018-06-06")
    assert before["close"].to_list() == [40.0, 100.0, 50.5, 51.0]


def test_dividend_factor_uses_the_previous_raw_close(store: Store) -> None:
    days = ["2020-01-02", "2020-01-03", "2020-01-06"]
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", d, c) for d, c in zip(days, [50.0, 50.0, 49.0], strict=True)]),
        knowledge_time="2020-02-01",
    )
    actions = pl.DataFrame(
        {
            "instrument": ["A"],
            "ex_date": [date(2020, 1, 6)],
            "kind": ["dividend"],
            "ratio": [None],
            "amount": [1.0],
        },
        schema_overrides={"ratio": pl.Float64},
    )
    ingest_frame(store, table_spec("corporate_actions"), actions, knowledge_time="2020-02-01")
    adj = read_bars(store, ["close"], adjust="adjusted")
    step = 50.0 / (50.0 - 1.0)
    assert adj["close"].to_list() == pytest.approx([50.0, 50.0, 49.0 * step])
    assert adj["close"][2] == pytest.approx(50.0)  # a total-return series is continuous


def test_raw_read_equals_what_was_ingested(store: Store) -> None:
    frame = bars_frame(
        [("B", "2020-01-03", 2.5), ("A", "2020-01-03", 1.5), ("A", "2020-01-02", 1.25)]
    )
    ingest_frame(store, table_spec("bars"), frame, knowledge_time="2020-02-01")
    got = read_bars(store, ["open", "high", "low", "close", "volume"])
    expected = frame.sort("instrument", "date")
    assert_frame_equal(got, expected)


def test_fields_published_on_different_days_do_not_blank_each_other(store: Store) -> None:
    days = ["2020-01-10", "2020-01-20", "2020-01-25"]
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", d, 1.0) for d in days]),
        knowledge_time="2020-02-01",
    )
    fundamentals = pl.DataFrame(
        {
            "instrument": ["A", "A"],
            "field": ["eps", "revenue"],
            "period_end": [date(2019, 12, 31)] * 2,
            "knowledge_date": [date(2020, 1, 10), date(2020, 1, 20)],
            "value": [1.0, 7.0],
        }
    )
    ingest_frame(store, table_spec("fundamentals"), fundamentals, knowledge_time="2020-02-01")
    both = read_bars(store, ["eps", "revenue"])
    assert both["eps"].to_list() == [1.0, 1.0, 1.0]
    assert both["revenue"].to_list() == [None, 7.0, 7.0]
    assert_frame_equal(both.select("instrument", "date", "eps"), read_bars(store, ["eps"]))
