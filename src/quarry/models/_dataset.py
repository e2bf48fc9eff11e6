"""Datasets: features plus a label cut into date segments or a walk-forward schedule.

A label reads the future (the default ``Ref($close, -2)/Ref($close, -1) - 1`` is known two
trading days after its date), so the last labels of a training window reach into whatever
follows it. A purge gap of the label horizon separates them: between the end of a training
(or validation) window and the start of the next segment lie at least ``horizon`` trading
days, so the last training label, read ``horizon`` days after its date, still ends before
the next segment begins, and no label overlaps the test period.

``check_segments`` refuses segments without that gap (``purge`` moves their ends earlier
instead), and ``WalkForward`` builds its windows with it. Days are counted on a calendar of
trading dates, usually the frame's own: ``frame["date"]``.
"""

from __future__ import annotations

import difflib
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import date, datetime
from itertools import pairwise
from typing import TypeAlias

import polars as pl

from quarry._dates import to_date
from quarry.exceptions import ExpressionError, LookaheadError, UsageError
from quarry.features import Expr, parse

__all__ = ["Segments", "WalkForward", "Window", "check_segments", "label_horizon", "purge", "split"]

Span: TypeAlias = tuple[date, date]
Calendar: TypeAlias = Sequence[date] | pl.Series

_NAMES = ("train", "valid", "test")
_EXAMPLE = "2010-01-01:2014-12-31"


def label_horizon(label: Expr | str) -> int:
    """How many trading days after its date a label reads: its purge gap.

    The furthest forward reach of the label's fields, following shifts through nested
    operators (``Ref(Ref($close, -1), -1)`` reads two days ahead); 0 for a label that reads
    no future data.

    Examples
    --------
    >>> label_horizon("Ref($close, -2)/Ref($close, -1) - 1")
    2
    >>> label_horizon("$close / Ref($close, 1) - 1")
    0
    """
    expr = parse(label) if isinstance(label, str) else label
    # Days ahead of its own date each node reads, None for a constant; children come first.
    reach: dict[Expr, int | None] = {}
    for node in expr.walk():
        if node.op == "$":
            reach[node] = 0
            continue
        inner = [r for r in (reach[a] for a in node.args) if r is not None]
        ahead = max(inner) if inner else None
        if ahead is not None and node.op in ("Ref", "Delta"):
            shift = _shift(node)
            # Ref(x, n) is x n days earlier; Delta(x, n) is x minus that.
            ahead = ahead - shift if node.op == "Ref" else max(ahead, ahead - shift)
        reach[node] = ahead
    return max(reach[expr] or 0, 0)


def _shift(node: Expr) -> int:
    arg = node.args[-1]
    if arg.op != "#" or not arg.value.is_integer():
        raise ExpressionError(f"{node}: the window must be a whole number, not {arg}")
    return int(arg.value)


# -- segments -------------------------------------------------------------------------------


def _show(span: Span) -> str:
    return f"{span[0]}:{span[1]}"


def _to_date(value: object, name: str) -> date:
    found = to_date(value)
    if found is not None:
        return found
    raise UsageError(
        f"segment {name}: {value!r} is not a date; write START:END as YYYY-MM-DD:YYYY-MM-DD, "
        f"such as {_EXAMPLE}"
    )


def _to_span(value: object, name: str) -> Span:
    """A segment from ``"START:END"`` or a (start, end) pair of dates or ISO strings."""
    if isinstance(value, str):
        parts: Sequence[object] = value.split(":")
    elif isinstance(value, Sequence):
        parts = value
    else:
        parts = ()
    if len(parts) != 2:
        raise UsageError(f"segment {name}: expected START:END, such as {_EXAMPLE}, not {value!r}")
    return _to_date(parts[0], name), _to_date(parts[1], name)


def _check_span(span: object, name: str) -> None:
    if not (
        isinstance(span, tuple)
        and len(span) == 2
        and all(isinstance(d, date) and not isinstance(d, datetime) for d in span)
    ):
        raise UsageError(
            f"segment {name} must be a (start, end) pair of datetime.date, not {span!r}; "
            "use Segments.parse for text"
        )
    if span[0] > span[1]:
        raise UsageError(
            f"segment {name} starts {span[0]}, after it ends {span[1]}; write START:END with "
            "START on or before END"
        )


def _check_order(spans: Sequence[tuple[str, Span]]) -> None:
    for (a, first), (b, second) in pairwise(spans):
        if second[0] < first[0]:
            raise UsageError(
                f"segment {b} ({_show(second)}) starts before {a} ({_show(first)}); "
                f"segments run {', '.join(_NAMES)} in date order"
            )
        if second[0] <= first[1]:
            raise UsageError(
                f"segments {a} ({_show(first)}) and {b} ({_show(second)}) overlap: end {a} "
                f"before {second[0]}, or start {b} after {first[1]}"
            )


@dataclass(frozen=True, kw_only=True)
class Segments:
    """Train, validation and test periods, each a (start, end) pair of dates, inclusive.

    The periods must be in that order and must not overlap; ``valid`` may be None for a
    model without early stopping. The purge gap the label needs is checked against a
    calendar by ``check_segments`` (or made by ``purge``).

    Examples
    --------
    >>> s = Segments.parse({"train": "2010-01-01:2014-12-31", "valid": "2015-01-01:2015-12-31",
    ...                     "test": "2016-01-01:2016-12-31"})
    >>> s.train
    (datetime.date(2010, 1, 1), datetime.date(2014, 12, 31))
    """

    train: Span
    valid: Span | None = None
    test: Span

    def __post_init__(self) -> None:
        for name, span in self.spans():
            _check_span(span, name)
        _check_order(self.spans())

    def spans(self) -> list[tuple[str, Span]]:
        """The named segments in date order, without a missing ``valid``."""
        return [(f.name, s) for f in fields(self) if (s := getattr(self, f.name)) is not None]

    @classmethod
    def parse(cls, spec: Mapping[str, object]) -> Segments:
        """Segments from a mapping of names to ``"START:END"`` text or (start, end) pairs.

        Dates are ISO (``YYYY-MM-DD``), as text or ``datetime.date`` (YAML reads an unquoted
        date as one). ``train`` and ``test`` are required, ``valid`` is optional.
        """
        for key in spec:
            if key not in _NAMES:
                close = difflib.get_close_matches(str(key), _NAMES, 1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise UsageError(f"unknown segment {key!r}{hint}; segments are {', '.join(_NAMES)}")
        for key in ("train", "test"):
            if spec.get(key) is None:
                raise UsageError(
                    f"segment {key} is missing; give train, test and optionally valid as "
                    f"START:END, such as {_EXAMPLE}"
                )
        valid = spec.get("valid")
        return cls(
            train=_to_span(spec["train"], "train"),
            valid=None if valid is None else _to_span(valid, "valid"),
            test=_to_span(spec["test"], "test"),
        )


@dataclass(frozen=True)
class Window:
    """One step of a walk-forward schedule: fit on ``train`` (stopping early on ``valid``,
    if any), then predict ``test``. Each a (start, end) pair of trading dates, inclusive."""

    train: Span
    valid: Span | None
    test: Span

    def segments(self) -> Segments:
        """The same periods as ``Segments``, for ``split`` and ``check_segments``."""
        return Segments(train=self.train, valid=self.valid, test=self.test)


def _calendar(calendar: Calendar) -> list[date]:
    """Trading dates as a sorted list; a polars Series (a frame's date column) may repeat."""
    if isinstance(calendar, pl.Series):
        days: list[date] = calendar.cast(pl.Date).unique().sort().drop_nulls().to_list()
    else:
        days = [d.date() if isinstance(d, datetime) else d for d in calendar]
        for a, b in pairwise(days):
            if not a < b:
                raise UsageError(
                    f"the calendar must hold sorted, unique trading dates; {a} is followed by "
                    f"{b} (pass frame['date'] to have it sorted)"
                )
    if not days:
        raise UsageError("the calendar holds no trading dates; is the frame empty?")
    return days


def _check_horizon(horizon: int) -> None:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
        raise UsageError(
            f"horizon must be a whole number of trading days, 0 or more, not {horizon!r} "
            "(label_horizon(label) gives it)"
        )


def _indices(segments: Segments, days: list[date]) -> list[tuple[str, Span, int, int]]:
    """Each segment with the calendar positions of its first and last trading days."""
    out = []
    for name, span in segments.spans():
        first, last = bisect_left(days, span[0]), bisect_right(days, span[1]) - 1
        if first > last:
            raise UsageError(
                f"segment {name} ({_show(span)}) holds no trading day of the calendar, which "
                f"runs {days[0]} to {days[-1]}"
            )
        out.append((name, span, first, last))
    return out


def check_segments(segments: Segments, calendar: Calendar, horizon: int) -> None:
    """Refuse segments whose training labels reach into the next segment.

    Between the last trading day of ``train`` and the first of ``valid`` (and between
    ``valid`` and ``test``, or ``train`` and ``test`` without ``valid``) there must be at
    least ``horizon`` trading days of ``calendar``, the label's purge gap, so the last
    label of a segment is known before the next one starts.

    Raises
    ------
    LookaheadError
        naming both segments, their dates, the gap found and the latest allowed end.
    UsageError
        for a segment with no trading day in the calendar, or a bad horizon.
    """
    _check_horizon(horizon)
    days = _calendar(calendar)
    found = _indices(segments, days)
    for (a, span, _, last), (b, after, first, _) in pairwise(found):
        gap = first - last - 1
        if gap < horizon:
            latest = days[first - horizon - 1] if first - horizon - 1 >= 0 else None
            fix = f"end {a} on or before {latest}" if latest is not None else f"start {b} later"
            raise LookaheadError(
                f"{a} ({_show(span)}) and {b} ({_show(after)}) have {gap} trading day(s) "
                f"between them, but the label reads {horizon} day(s) ahead, so the last {a} "
                f"labels overlap {b}; leave at least {horizon}: {fix}, or use purge()"
            )


def purge(segments: Segments, calendar: Calendar, horizon: int) -> Segments:
    """The segments with ``train`` and ``valid`` ending early enough for ``check_segments``.

    Each end moves back to the trading day ``horizon + 1`` trading days before the next
    segment's start, if it is later than that; starts never move.
    """
    _check_horizon(horizon)
    days = _calendar(calendar)
    found = _indices(segments, days)
    ends: dict[str, Span] = {}
    for (a, span, start, last), (b, _, first, _) in pairwise(found):
        latest = first - horizon - 1
        if last <= latest:
            continue
        if latest < start:
            raise UsageError(
                f"purging {a} ({_show(span)}) for a {horizon}-day label leaves no trading day "
                f"before {b} starts; end {a} earlier or start {b} later"
            )
        ends[a] = (span[0], days[latest])
    return replace(segments, **ends)


def split(frame: pl.DataFrame, segments: Segments | Window) -> dict[str, pl.DataFrame]:
    """The rows of ``frame`` in each segment by their ``date``, keyed train, valid, test.

    ``valid`` is left out when the segments have none.
    """
    if isinstance(segments, Window):
        segments = segments.segments()
    if "date" not in frame.columns:
        raise UsageError(f"cannot split a frame without a date column; it has {frame.columns}")
    day = pl.col("date").cast(pl.Date)
    return {
        name: frame.filter(day.is_between(start, end, closed="both"))
        for name, (start, end) in segments.spans()
    }


# -- walk-forward ----------------------------------------------------------------------------


def _whole(value: object, name: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(
            f"{name} must be a whole number of trading days, {least} or more, not {value!r}"
        )


@dataclass(frozen=True, kw_only=True)
class WalkForward:
    """A walk-forward schedule: retrain every ``step`` trading days across a test period.

    Parameters
    ----------
    start, end
        The whole test period (dates, inclusive); the test windows tile its trading days.
    step
        Trading days between retrains, the length of each test window (the last may be
        shorter).
    horizon
        The label's purge gap (``label_horizon(label)``): trading days left out between a
        training or validation window and what follows it.
    train_days
        Length of the fitting window in trading days (validation and the gap between them
        included), ending ``horizon`` trading days before the test window; None for an
        expanding window from the calendar's first date. A rolling window is cut at the
        calendar's first date.
    valid_days
        Trading days for early stopping, taken from the end of the fitting window, with a
        purge gap before them; 0 for none.

    Examples
    --------
    >>> wf = WalkForward(start=date(2020, 1, 1), end=date(2020, 12, 31), step=20, horizon=2,
    ...                  train_days=500, valid_days=60)
    """

    start: date
    end: date
    step: int
    horizon: int
    train_days: int | None = None
    valid_days: int = 0

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, date) or isinstance(value, datetime):
                raise UsageError(f"{name} must be a datetime.date, not {value!r}")
        if self.start > self.end:
            raise UsageError(
                f"the test period starts {self.start}, after it ends {self.end}; swap them"
            )
        _whole(self.step, "step", 1)
        _whole(self.horizon, "horizon", 0)
        _whole(self.valid_days, "valid_days", 0)
        if self.train_days is not None:
            _whole(self.train_days, "train_days", 1)
            need = self.valid_days + self.horizon + 1 if self.valid_days else 1
            if self.train_days < need:
                raise UsageError(
                    f"train_days={self.train_days} leaves no day to train on after "
                    f"valid_days={self.valid_days} and the {self.horizon}-day purge gap; "
                    f"give train_days={need} or more"
                )

    def windows(self, calendar: Calendar) -> list[Window]:
        """The schedule's windows on ``calendar`` (trading dates, the frame's own).

        Raises UsageError if the calendar has no trading day in the test period, or too few
        before it for the first window's training.
        """
        days = _calendar(calendar)
        first, last = bisect_left(days, self.start), bisect_right(days, self.end) - 1
        if first > last:
            raise UsageError(
                f"no trading day between {self.start} and {self.end}; the calendar runs "
                f"{days[0]} to {days[-1]}"
            )
        out = []
        for k in range(first, last + 1, self.step):
            fit_end = k - self.horizon - 1
            fit_start = 0 if self.train_days is None else max(0, fit_end - self.train_days + 1)
            valid_start = fit_end - self.valid_days + 1
            train_end = valid_start - self.horizon - 1 if self.valid_days else fit_end
            if train_end < fit_start:
                raise UsageError(
                    f"the test window from {days[k]} has {k} trading day(s) before it in the "
                    f"calendar, too few to train on after valid_days={self.valid_days} and the "
                    f"{self.horizon}-day purge gap; start the test period later"
                )
            out.append(
                Window(
                    train=(days[fit_start], days[train_end]),
                    valid=(days[valid_start], days[fit_end]) if self.valid_days else None,
                    test=(days[k], days[min(k + self.step, last + 1) - 1]),
                )
            )
        return out
