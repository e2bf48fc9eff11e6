"""Reading a signal: the one place a backtest's scores are loaded and checked.

A signal is a table of ``instrument``, ``date`` and ``score`` (other columns are ignored).
``load_signal`` reads one from a Parquet or CSV file; ``check_signal`` turns any frame into
the canonical shape (instrument text, date a ``Date`` or for intraday bars a UTC time, score
``Float64``) or says, in one line naming the source and the column, what is wrong with it:

- ``instrument``: text, or whole numbers (read as text: they then have to match the store's
  ids as written); never missing.
- ``date``: a date, a datetime (its date), or ISO text ``YYYY-MM-DD`` (optionally followed
  by a time, as ``2021-01-04T00:00:00``); never missing.
- ``score``: numbers; a missing or NaN score means no score for that row; an infinite one
  is refused (it would rank first or last whatever the others are).

Duplicate (instrument, date) rows are checked where they matter, on the grid of the store's
market (``quarry.backtest.align``): the same score twice is one score; two different scores
are refused.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quarry.exceptions import DataError, UsageError

__all__ = ["SIGNAL_COLUMNS", "check_signal", "load_signal"]

SIGNAL_COLUMNS = ("instrument", "date", "score")

# ISO dates, optionally with a time: what "2021-01-04" and a datetime written as text look like
_ISO = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:?\d{2}|Z)?)?$"


def load_signal(path: str | Path) -> pl.DataFrame:
    """The signal in ``path`` (Parquet, or CSV by its ``.csv`` suffix), checked.

    Parameters
    ----------
    path
        A Parquet or CSV file with instrument, date and score columns.

    Returns
    -------
    pl.DataFrame
        instrument (String), date (Date), score (Float64), as ``check_signal`` gives them.

    Raises
    ------
    DataError
        No such file, or it is not a readable Parquet or CSV file.
    UsageError
        A column is missing or holds values that are not what it needs (see the module).

    Examples
    --------
    ::

        signal = load_signal("runs/lgb/predictions.parquet")
        result = run_backtest(store, signal, out, source="runs/lgb/predictions.parquet")
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; quarry train writes predictions.parquet")
    if path.is_dir():
        raise DataError(f"{path}: a folder, not a signal file; give a Parquet or CSV file")
    from quarry.features._tables import is_arrow, read_frame

    try:
        if path.suffix.lower() == ".csv":
            # ids such as 000001 are text: inferring numbers would drop their zeros
            frame = pl.read_csv(path, schema_overrides={"instrument": pl.String})
        else:
            frame = read_frame([path])
    except (pl.exceptions.PolarsError, OSError) as exc:
        kind = (
            "CSV" if path.suffix.lower() == ".csv" else "Arrow IPC" if is_arrow(path) else "Parquet"
        )
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: not a readable {kind} file ({first}); give a Parquet file (or a .csv or "
            ".arrow) with instrument, date, score"
        ) from exc
    return check_signal(frame, source=str(path))


def _first_bad(frame: pl.DataFrame, bad: pl.Series, column: str) -> tuple[int, object]:
    """The 1-based row and the value of the first row where ``bad`` is true."""
    row = int(bad.arg_true()[0])
    return row + 1, frame[column][row]


def check_signal(frame: pl.DataFrame, source: str = "the signal") -> pl.DataFrame:
    """``frame``'s instrument, date and score in their canonical types, or a one-line error.

    Parameters
    ----------
    frame
        A signal: instrument, date, score (other columns are dropped).
    source
        What to call the signal in an error: its file, say.

    Returns
    -------
    pl.DataFrame
        instrument (String), date (Date, or a UTC Datetime when the signal has times of
        day), score (Float64, NaN as null), in ``frame``'s order.

    Raises
    ------
    UsageError
        A column is missing or of the wrong kind, a value cannot be read (the first such row
        is named), or the signal has no row.
    """
    missing = [c for c in SIGNAL_COLUMNS if c not in frame.columns]
    if missing:
        have = ", ".join(frame.columns[:12]) + (", ..." if frame.width > 12 else "")
        raise UsageError(
            f"{source}: no {', '.join(missing)} column (columns: {have or 'none'}); a signal "
            "needs instrument, date and score (rename the prediction column to score)"
        )
    if frame.height == 0:
        raise UsageError(f"{source}: no rows; a signal needs one score per instrument and date")
    out = frame.select(_instrument(frame, source), _date(frame, source), _score(frame, source))
    for column in ("instrument", "date"):
        nulls = out[column].is_null()
        if nulls.any():
            row, _ = _first_bad(out, nulls, column)
            raise UsageError(
                f"{source}: column {column}, row {row}: missing ({int(nulls.sum()):,} rows have "
                f"no {column}); every score needs an instrument and a date"
            )
    return out


def _instrument(frame: pl.DataFrame, source: str) -> pl.Series:
    s = frame["instrument"]
    if s.dtype == pl.String:
        return s
    if isinstance(s.dtype, pl.Categorical | pl.Enum) or s.dtype.is_integer():
        return s.cast(pl.String)
    raise UsageError(
        f"{source}: column instrument is {s.dtype}; give the store's instrument ids as text"
    )


def _date(frame: pl.DataFrame, source: str) -> pl.Series:
    """Dates; or, for intraday bars, times (UTC): a column with any time of day."""
    from quarry.data import first_timed, parse_times

    s = frame["date"]
    if s.dtype == pl.Date:
        return s
    timed = first_timed(s)
    if isinstance(s.dtype, pl.Datetime):
        if timed is None:
            return s.dt.date()
        zoned = s.dt.replace_time_zone("UTC") if s.dtype.time_zone is None else s
        return zoned.dt.convert_time_zone("UTC").cast(pl.Datetime("us", "UTC")).alias("date")
    if s.dtype == pl.String and timed is not None:
        times = pl.select(parse_times(pl.lit(s))).to_series()
        bad = s.is_not_null() & times.is_null()
        if bad.any():
            row, value = _first_bad(frame, bad, "date")
            raise UsageError(
                f"{source}: column date, row {row}: {value!r} is not a time ({int(bad.sum()):,} "
                "such rows; the signal has times of day, so every row needs one); write times "
                "as YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
            )
        return times.alias("date")
    if s.dtype == pl.String:
        text = s.str.strip_chars()
        iso = text.str.contains(_ISO)
        parsed = pl.when(iso).then(text.str.slice(0, 10)).otherwise(None)
        dates = pl.select(parsed.str.to_date("%Y-%m-%d", strict=False)).to_series()
        bad = s.is_not_null() & dates.is_null()
        if bad.any():
            row, value = _first_bad(frame, bad, "date")
            raise UsageError(
                f"{source}: column date, row {row}: {value!r} is not a date "
                f"({int(bad.sum()):,} such rows); write dates as YYYY-MM-DD"
            )
        return dates.alias("date")
    raise UsageError(
        f"{source}: column date is {s.dtype}; give dates, or text as YYYY-MM-DD "
        f"(first value: {s[0]!r})"
    )


def _score(frame: pl.DataFrame, source: str) -> pl.Series:
    s = frame["score"]
    if s.dtype == pl.Boolean or not (s.dtype.is_numeric() or s.dtype == pl.String):
        raise UsageError(f"{source}: column score is {s.dtype}; give numbers")
    scores = s.cast(pl.Float64, strict=False)
    bad = s.is_not_null() & scores.is_null()
    if bad.any():
        row, value = _first_bad(frame, bad, "score")
        raise UsageError(
            f"{source}: column score, row {row}: {value!r} is not a number "
            f"({int(bad.sum()):,} such rows)"
        )
    infinite = scores.is_infinite()
    if infinite.any():
        row, value = _first_bad(frame, infinite, "score")
        raise UsageError(
            f"{source}: column score, row {row}: {value!r} ({int(infinite.sum()):,} infinite "
            "scores); give finite scores, or leave a score empty for none"
        )
    return scores.fill_nan(None).alias("score")
