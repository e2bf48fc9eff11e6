"""Datasets: label horizons, segments with purge gaps, splits and walk-forward windows.

The calendar is 30 business days from Monday 2024-01-01; positions, for checking by hand:

    0 Jan 1   5 Jan 8   10 Jan 15   15 Jan 22   20 Jan 29   25 Feb 5
    1 Jan 2   6 Jan 9   11 Jan 16   16 Jan 23   21 Jan 30   26 Feb 6
    2 Jan 3   7 Jan 10  12 Jan 17   17 Jan 24   22 Jan 31   27 Feb 7
    3 Jan 4   8 Jan 11  13 Jan 18   18 Jan 25   23 Feb 1    28 Feb 8
    4 Jan 5   9 Jan 12  14 Jan 19   19 Jan 26   24 Feb 2    29 Feb 9
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.exceptions import ExpressionError, LookaheadError, UsageError
from quarry.features import DEFAULT_LABEL, F, Plan, call, compute
from quarry.models._dataset import (
    Segments,
    WalkForward,
    Window,
    check_segments,
    label_horizon,
    purge,
    split,
)


def bdays(n: int, start: date = date(2024, 1, 1)) -> list[date]:
    out, day = [], start
    while len(out) < n:
        if day.weekday() < 5:
            out.append(day)
        day += timedelta(days=1)
    return out


CAL = bdays(30)


def d(month: int, day: int) -> date:
    return date(2024, month, day)


def test_calendar_positions_match_the_table() -> None:
    assert (CAL[0], CAL[9], CAL[10], CAL[19], CAL[24], CAL[29]) == (
        d(1, 1),
        d(1, 12),
        d(1, 15),
        d(1, 26),
        d(2, 2),
        d(2, 9),
    )


# -- the compile-time leak check (issue 4) ------------------------------------------------------


def test_a_feature_built_from_the_label_is_rejected_when_compiled() -> None:
    with pytest.raises(LookaheadError, match=r"Ref\(\$close, -1\).*only a label"):
        Plan.build({"leak": "Ref($close, -1)"})
    with pytest.raises(LookaheadError, match=r"Ref\(\$close, -2\)"):
        Plan.build({"leak": DEFAULT_LABEL}, label=DEFAULT_LABEL)
    # The same expression as the label is what labels are for.
    assert "LABEL0" in Plan.build({"ret": "$close/Ref($close, 1) - 1"}, label=DEFAULT_LABEL).outputs


def test_compute_refuses_a_look_ahead_feature_before_reading_data() -> None:
    frame = pl.DataFrame(
        {"instrument": ["A"] * 5, "date": CAL[:5], "close": [1.0, 2.0, 3.0, 4.0, 5.0]}
    )
    with pytest.raises(LookaheadError, match="into the future"):
        compute(frame, {"mom": "$close/Ref($close, 1)", "leak": "Ref($close, -1)/$close - 1"})
    out = compute(frame, {"close": "$close"}, label="Ref($close, -1)")
    assert out["LABEL0"].to_list() == [2.0, 3.0, 4.0, 5.0, None]


# -- label_horizon -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "horizon"),
    [
        (DEFAULT_LABEL, 2),
        ("Ref($close, -1)/$close - 1", 1),
        ("Ref($close, -5)/Ref($close, -1) - 1", 5),
        ("$close/Ref($close, 1) - 1", 0),
        ("$close", 0),
        ("Ref(Ref($close, -1), -1)", 2),  # shifts add up
        ("Ref(Ref($close, -3), 1)", 2),
        ("Ref(Mean($close, 5), -3)", 3),  # a window ends at its date
        ("Mean(Ref($close, -1), 20)", 1),
        ("Delta($close, -4)", 4),  # $close minus $close four days later
        ("CSRank(Ref($close, -2)/$close)", 2),
        ("Ref($close, -1) * 0 + Ref(5, -9)", 1),  # a constant reads no data
    ],
)
def test_label_horizon(label: str, horizon: int) -> None:
    assert label_horizon(label) == horizon


def test_label_horizon_takes_expressions_and_refuses_a_fractional_shift() -> None:
    assert label_horizon(call("Ref", F("close"), -3) / F("close") - 1) == 3
    with pytest.raises(ExpressionError, match="whole number"):
        label_horizon("Ref($close, -1.5)")


# -- segments ------------------------------------------------------------------------------


def segs(train: str, valid: str | None, test: str) -> Segments:
    return Segments.parse({"train": train, "valid": valid, "test": test})


def test_segments_parse_text_pairs_and_yaml_dates() -> None:
    s = segs("2010-01-01:2014-12-31", "2015-01-01:2015-12-31", "2016-01-04:2016-12-30")
    assert s == Segments(
        train=(date(2010, 1, 1), date(2014, 12, 31)),
        valid=(date(2015, 1, 1), date(2015, 12, 31)),
        test=(date(2016, 1, 4), date(2016, 12, 30)),
    )
    # YAML reads unquoted dates as dates; lists and datetimes are fine too.
    same = Segments.parse(
        {
            "train": [date(2010, 1, 1), "2014-12-31"],
            "valid": (datetime(2015, 1, 1, 0, 0), date(2015, 12, 31)),
            "test": " 2016-01-04 : 2016-12-30 ",
        }
    )
    assert same == s
    no_valid = Segments.parse({"train": "2010-01-01:2014-12-31", "test": "2015-01-01:2015-12-31"})
    assert no_valid.valid is None
    assert [name for name, _ in no_valid.spans()] == ["train", "test"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"train": "2010-13-01:2014-12-31"},
            r"segment train: '2010-13-01' is not a date; .*"
            r"YYYY-MM-DD:YYYY-MM-DD",
        ),
        ({"train": "2010-01-01"}, r"segment train: expected START:END, such as 2010-01-01:"),
        ({"valid": "2015-01-01:2015-02-30"}, "segment valid: '2015-02-30' is not a date"),
        ({"test": 2016}, r"segment test: expected START:END"),
        (
            {"train": "2014-12-31:2010-01-01"},
            "segment train starts 2014-12-31, after it ends "
            "2010-01-01; write START:END with START on or before END",
        ),
        (
            {"valid": "2014-06-01:2015-12-31"},
            r"segments train \(2010-01-01:2014-12-31\) and "
            r"valid \(2014-06-01:2015-12-31\) overlap: end train before 2014-06-01",
        ),
        ({"test": "2015-12-31:2016-12-31"}, "segments valid .* and test .* overlap"),
        (
            {"valid": "2009-01-01:2009-12-31"},
            r"segment valid \(2009-01-01:2009-12-31\) starts "
            "before train .* in date order",
        ),
        ({"tset": "2016-01-01:2016-12-31"}, r"unknown segment 'tset' \(did you mean test\?\)"),
        ({"test": None}, "segment test is missing"),
    ],
)
def test_segments_parse_errors_name_the_segment_and_the_fix(
    spec: dict[str, object], message: str
) -> None:
    base: dict[str, object] = {
        "train": "2010-01-01:2014-12-31",
        "valid": "2015-01-01:2015-12-31",
        "test": "2016-01-01:2016-12-31",
    }
    with pytest.raises(UsageError, match=message):
        Segments.parse({**base, **spec})


def test_segments_refuse_text_given_directly() -> None:
    with pytest.raises(UsageError, match=r"use Segments\.parse for text"):
        text: Any = ("2010-01-01", "2014-12-31")
        Segments(train=text, test=(d(1, 1), d(1, 2)))


# -- check_segments and purge ----------------------------------------------------------------


def test_check_segments_rejects_a_train_window_overlapping_the_next_labels() -> None:
    # Train ends Jan 12 (9), valid starts Jan 15 (10): no day between, and a 2-day label at
    # Jan 12 reads Jan 16, inside valid.
    s = segs("2024-01-01:2024-01-12", "2024-01-15:2024-01-19", "2024-01-24:2024-02-09")
    with pytest.raises(
        LookaheadError,
        match=r"^train \(2024-01-01:2024-01-12\) and valid \(2024-01-15:2024-01-19\) have 0 "
        r"trading day\(s\) between them, but the label reads 2 day\(s\) ahead, so the last "
        r"train labels overlap valid; leave at least 2: end train on or before 2024-01-10",
    ):
        check_segments(s, CAL, 2)
    check_segments(s, CAL, 0)  # a label that reads no future needs no gap


def test_check_segments_counts_trading_days_not_calendar_days() -> None:
    # Fri Jan 12 to Tue Jan 16: three calendar days between, one trading day (Mon Jan 15).
    s = segs("2024-01-01:2024-01-12", "2024-01-16:2024-01-19", "2024-01-24:2024-02-09")
    check_segments(s, CAL, 1)
    with pytest.raises(LookaheadError, match="have 1 trading day"):
        check_segments(s, CAL, 2)
    # An end on a weekend counts from the last trading day before it.
    check_segments(
        segs("2024-01-01:2024-01-14", "2024-01-17:2024-01-19", "2024-01-24:2024-02-09"), CAL, 2
    )


@pytest.mark.parametrize(("train_end", "ok"), [(d(1, 10), True), (d(1, 11), False)])
def test_the_purge_gap_boundary(train_end: date, ok: bool) -> None:
    # Valid starts Jan 15 (10); a 2-day label needs train to end by Jan 10 (7).
    s = Segments(train=(d(1, 1), train_end), valid=(d(1, 15), d(1, 19)), test=(d(1, 24), d(2, 9)))
    if ok:
        check_segments(s, CAL, 2)
    else:
        with pytest.raises(LookaheadError, match="on or before 2024-01-10"):
            check_segments(s, CAL, 2)


def test_check_segments_between_valid_and_test_and_without_valid() -> None:
    s = segs("2024-01-01:2024-01-10", "2024-01-15:2024-01-19", "2024-01-22:2024-02-09")
    with pytest.raises(LookaheadError, match=r"^valid .* and test \(2024-01-22:2024-02-09\)"):
        check_segments(s, CAL, 2)
    no_valid = segs("2024-01-01:2024-01-17", None, "2024-01-22:2024-02-09")
    check_segments(no_valid, CAL, 2)
    with pytest.raises(LookaheadError, match=r"^train .* and test"):
        check_segments(no_valid, CAL, 3)


def test_purge_moves_ends_back_to_pass_the_check() -> None:
    s = segs("2024-01-01:2024-01-12", "2024-01-15:2024-01-19", "2024-01-22:2024-02-09")
    purged = purge(s, CAL, 2)
    assert purged == Segments(
        train=(d(1, 1), d(1, 10)), valid=(d(1, 15), d(1, 17)), test=(d(1, 22), d(2, 9))
    )
    check_segments(purged, CAL, 2)
    assert purge(purged, CAL, 2) == purged  # ends already early enough stay put
    assert purge(s, CAL, 0) == s


def test_purge_refuses_to_empty_a_segment() -> None:
    s = segs("2024-01-01:2024-01-12", "2024-01-15:2024-01-16", "2024-01-17:2024-02-09")
    with pytest.raises(UsageError, match=r"purging valid \(2024-01-15:2024-01-16\) for a 2-day"):
        purge(s, CAL, 2)


def test_segments_must_hold_trading_days_and_the_calendar_must_be_sorted() -> None:
    s = segs("2023-01-01:2023-12-31", "2024-01-15:2024-01-19", "2024-01-24:2024-02-09")
    with pytest.raises(
        UsageError,
        match=r"segment train \(2023-01-01:2023-12-31\) holds no "
        "trading day of the calendar, which runs 2024-01-01 to 2024-02-09",
    ):
        check_segments(s, CAL, 2)
    ok = segs("2024-01-01:2024-01-10", "2024-01-15:2024-01-19", "2024-01-24:2024-02-09")
    with pytest.raises(UsageError, match="sorted, unique"):
        check_segments(ok, [CAL[1], CAL[0], *CAL[2:]], 2)
    with pytest.raises(UsageError, match="horizon must be"):
        check_segments(ok, CAL, -1)
    # A frame's date column, repeated per instrument and unsorted, is a calendar.
    check_segments(ok, pl.Series("date", CAL[::-1] + CAL), 2)


# -- split ---------------------------------------------------------------------------------


def test_split_selects_rows_by_date_inclusive() -> None:
    frame = pl.DataFrame(
        {
            "instrument": ["A", "B"] * 30,
            "date": [day for day in CAL for _ in range(2)],
            "f": [float(i) for i in range(60)],
            "LABEL0": [float(-i) for i in range(60)],
        }
    )
    s = segs("2024-01-01:2024-01-10", "2024-01-15:2024-01-17", "2024-01-22:2024-02-09")
    parts = split(frame, s)
    assert list(parts) == ["train", "valid", "test"]
    assert_frame_equal(parts["train"], frame[0:16])  # Jan 1 to Jan 10: positions 0-7
    assert_frame_equal(parts["valid"], frame[20:26])  # positions 10-12
    assert_frame_equal(parts["test"], frame[30:60])
    window = Window(train=(d(1, 1), d(1, 1)), valid=None, test=(d(2, 9), d(2, 9)))
    assert {k: v["f"].to_list() for k, v in split(frame, window).items()} == {
        "train": [0.0, 1.0],
        "test": [58.0, 59.0],
    }


# -- walk-forward --------------------------------------------------------------------------


def test_rolling_windows_by_hand() -> None:
    wf = WalkForward(start=d(1, 22), end=d(2, 9), step=5, horizon=2, train_days=10, valid_days=3)
    assert wf.windows(CAL) == [
        # Test from 15: fitting window 3-12, valid 10-12, gap 8-9, train 3-7; gap 13-14.
        Window(train=(d(1, 4), d(1, 10)), valid=(d(1, 15), d(1, 17)), test=(d(1, 22), d(1, 26))),
        Window(train=(d(1, 11), d(1, 17)), valid=(d(1, 22), d(1, 24)), test=(d(1, 29), d(2, 2))),
        Window(train=(d(1, 18), d(1, 24)), valid=(d(1, 29), d(1, 31)), test=(d(2, 5), d(2, 9))),
    ]


def test_expanding_windows_start_at_the_first_date() -> None:
    wf = WalkForward(start=d(1, 20), end=d(2, 7), step=5, horizon=1)  # Jan 20 is a Saturday
    assert wf.windows(CAL) == [
        Window(train=(d(1, 1), d(1, 18)), valid=None, test=(d(1, 22), d(1, 26))),
        Window(train=(d(1, 1), d(1, 25)), valid=None, test=(d(1, 29), d(2, 2))),
        Window(train=(d(1, 1), d(2, 1)), valid=None, test=(d(2, 5), d(2, 7))),  # cut at end
    ]


def test_a_rolling_window_is_cut_at_the_first_date() -> None:
    wf = WalkForward(start=d(1, 8), end=d(1, 19), step=5, horizon=2, train_days=4)
    assert [w.train for w in wf.windows(CAL)] == [(d(1, 1), d(1, 3)), (d(1, 5), d(1, 10))]


@pytest.mark.parametrize(
    "wf",
    [
        WalkForward(start=d(1, 10), end=d(2, 9), step=1, horizon=0),
        WalkForward(start=d(1, 10), end=d(2, 8), step=3, horizon=2, train_days=5),
        WalkForward(start=d(1, 13), end=d(2, 5), step=4, horizon=1, valid_days=2),
        WalkForward(start=d(1, 16), end=d(2, 9), step=7, horizon=3, train_days=9, valid_days=2),
        WalkForward(start=d(1, 16), end=d(3, 1), step=40, horizon=2, valid_days=1),
    ],
)
def test_windows_tile_the_test_period_and_pass_the_purge_check(wf: WalkForward) -> None:
    windows = wf.windows(CAL)
    tested = [day for w in windows for day in CAL if w.test[0] <= day <= w.test[1]]
    assert tested == [day for day in CAL if wf.start <= day <= wf.end]  # no gap, no overlap
    for w in windows:
        check_segments(w.segments(), CAL, wf.horizon)
        # Each fitting window ends exactly `horizon` trading days before the test.
        fit_end = w.valid[1] if w.valid else w.train[1]
        assert CAL.index(w.test[0]) - CAL.index(fit_end) - 1 == wf.horizon
        if wf.valid_days:
            assert w.valid is not None
            assert CAL.index(w.valid[1]) - CAL.index(w.valid[0]) + 1 == wf.valid_days
            assert CAL.index(w.valid[0]) - CAL.index(w.train[1]) - 1 == wf.horizon
        if wf.train_days is None:
            assert w.train[0] == CAL[0]
        else:
            start = CAL.index(fit_end) - wf.train_days + 1
            assert w.train[0] == CAL[max(start, 0)]
        if wf.horizon:
            with pytest.raises(LookaheadError):
                check_segments(w.segments(), CAL, wf.horizon + 1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": d(2, 1), "end": d(1, 1)}, "starts 2024-02-01, after it ends 2024-01-01"),
        ({"start": "2024-01-01"}, "start must be a datetime.date, not '2024-01-01'"),
        ({"step": 0}, "step must be a whole number of trading days, 1 or more, not 0"),
        ({"horizon": -1}, "horizon must be .* 0 or more, not -1"),
        ({"valid_days": 2.5}, "valid_days must be .*not 2.5"),
        ({"train_days": 0}, "train_days must be .* 1 or more"),
        ({"train_days": 5, "valid_days": 3}, r"train_days=5 leaves no day .* train_days=6"),
    ],
)
def test_walk_forward_parameters_are_checked(kwargs: dict[str, object], message: str) -> None:
    params: dict[str, object] = {"start": d(1, 15), "end": d(2, 9), "step": 5, "horizon": 2}
    with pytest.raises(UsageError, match=message):
        WalkForward(**{**params, **kwargs})  # type: ignore[arg-type]


def test_windows_need_history_before_the_test_period() -> None:
    WalkForward(start=d(1, 4), end=d(1, 19), step=5, horizon=2).windows(CAL)  # trains on Jan 1
    with pytest.raises(UsageError, match=r"from 2024-01-03 has 2 trading day\(s\) before it"):
        WalkForward(start=d(1, 3), end=d(1, 19), step=5, horizon=2).windows(CAL)
    with pytest.raises(UsageError, match="valid_days=3"):
        WalkForward(start=d(1, 10), end=d(1, 19), step=5, horizon=2, valid_days=3).windows(CAL)
    with pytest.raises(UsageError, match="no trading day between 2024-03-01 and 2024-03-29"):
        WalkForward(start=d(3, 1), end=d(3, 29), step=5, horizon=2).windows(CAL)
