"""Dates and times of bars: daily bars key on a date, intraday bars on a UTC time.

One parser for bar times and one rule for bounds serve ingest, reads, features and the
command line, so that a time given anywhere means the same instant.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import polars as pl

__all__ = ["first_timed", "key_bound", "parse_bound", "parse_times"]

# Bar times: ISO 8601 with a time of day, seconds and fraction optional, "T" or a space
# between date and time; an offset (+HH:MM, or Z) converts to UTC, none means UTC.
_TIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
)
_TIMED = r"\d[T ]\d{1,2}:\d{2}"  # a value with a time of day
TIME_HINT = "YYYY-MM-DDTHH:MM[:SS][+HH:MM]"


def parse_times(text: pl.Expr) -> pl.Expr:
    """ISO 8601 times (see ``_TIME_FORMATS``) as UTC microseconds; what does not parse, a
    bare date included, becomes null."""
    text = text.str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    text = text.str.replace(r"[Zz]$", "+00:00")
    return pl.coalesce(
        text.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False)
        if "%:z" in f
        else text.str.to_datetime(f, time_unit="us", strict=False).dt.replace_time_zone("UTC")
        for f in _TIME_FORMATS
    )


def first_timed(column: pl.Series) -> int | None:
    """The index of the column's first value with a time of day other than midnight (text or
    a timestamp), or None: it then holds days, as vendors write days as midnights too."""
    if column.dtype == pl.String:
        timed = column.str.contains(_TIMED).fill_null(False)
        if not timed.any():
            return None
        times = pl.select(parse_times(pl.lit(column))).to_series()
        # text with a time that does not parse counts too: it is reported where it is read
        found = timed & (times.is_null() | (times.dt.time() != time(0))).fill_null(True)
    elif isinstance(column.dtype, pl.Datetime):
        found = (column.dt.time() != time(0)).fill_null(False)
    else:
        return None
    hits = found.arg_true()
    return int(hits[0]) if hits.len() else None


def parse_bound(text: str | None, what: str) -> date | datetime | None:
    """A range end given on the command line: a date, or a time (UTC unless it has an
    offset) for intraday bars."""
    from quarry.exceptions import UsageError

    if text is None:
        return None
    value = text.strip()
    try:
        if len(value) <= 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{what} {text!r}: write a date YYYY-MM-DD, or a time {TIME_HINT} for intraday bars"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def key_bound(value: Any, timed: bool, upper: bool) -> Any:
    """A range end for a date key (``timed`` False) or a time key: a time bounds a date key
    by its UTC day; a date bounds a time key from its first microsecond (``upper``: to its
    last)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return moment.astimezone(UTC) if timed else moment.astimezone(UTC).date()
    if isinstance(value, date) and timed:
        start = datetime.combine(value, time(), UTC)
        return start + timedelta(days=1, microseconds=-1) if upper else start
    return value
