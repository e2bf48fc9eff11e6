"""What /predict accepts and answers.

Three bodies:

- JSON ``{"instruments": [...], "date": "YYYY-MM-DD"}``: Quarry computes the model's own
  features as of that date from the data store, with the research engine and through the
  feature cache (``quarry.models._inputs.features_for``), scores the whole cross-section of
  that day (a cross-sectional processor, such as a per-day z-score, sees the day as training
  saw it), and answers the instruments asked for, in their order (a score of null for one
  without a bar that day). Without ``instruments``, the whole cross-section.
- JSON ``{"records": [{"instrument": ..., "date": ..., FEATURE: value, ...}, ...]}``: the raw
  features as a table; the rows are scored together as given (so a cross-sectional
  processor sees the rows of each date sent). A value is a number, null (missing), or a
  boolean (1 or 0).
- an Arrow IPC stream (``Content-Type: application/vnd.apache.arrow.stream``) of the same
  table.

The answer is JSON ``{model, alias, version, predictions: [{instrument, date, score}]}``, or
with ``Accept: application/vnd.apache.arrow.stream`` an Arrow IPC stream of instrument, date,
score. A body that does not fit is a 422 naming the field.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import polars as pl
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from quarry.exceptions import DataError
from quarry.tracking._packaged import Packaged

__all__ = [
    "ARROW",
    "ByDate",
    "ByRecords",
    "RowScorer",
    "Scored",
    "by_date",
    "parse_body",
    "score_records",
    "score_table",
    "to_arrow",
    "to_json",
]

ARROW = "application/vnd.apache.arrow.stream"
KEYS = ("instrument", "date")


class ByDate(BaseModel):
    """Score instruments on a date, from features Quarry computes from the store."""

    model_config = ConfigDict(extra="forbid")

    date: dt.date = Field(description="The day to score (YYYY-MM-DD): a trading day in the store.")
    instruments: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The instruments to answer for, in this order (default: every "
        "instrument with a bar that day).",
    )
    as_of: dt.datetime | None = Field(
        default=None,
        description="Read the store as it was known at this time (default: all it knows now).",
    )
    universe: str | None = Field(
        default=None,
        description="The universe whose members make the cross-section (default: the "
        "model's metadata's, else every instrument).",
    )


class ByRecords(BaseModel):
    """Score a table of raw features: instrument, date and each feature the model reads."""

    model_config = ConfigDict(extra="forbid")

    records: list[dict[str, Any]] = Field(
        min_length=1,
        description="Rows of instrument, date (YYYY-MM-DD) and the raw feature values "
        "(numbers, or null for a missing one).",
    )


def unprocessable(path: str, message: str) -> HTTPException:
    """A 422 naming the field, in the job service's ``{path, message}`` form."""
    return HTTPException(
        422, [{"path": path, "message": f"{path}: {message}" if path else message}]
    )


def _problems(exc: ValidationError) -> HTTPException:
    problems = []
    for e in exc.errors():
        path = ".".join(str(p) for p in e.get("loc", ()))
        message = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append({"path": path, "message": f"{path}: {message}" if path else message})
    return HTTPException(422, problems)


def _json_loads(body: bytes) -> Any:
    """JSON through orjson (5 times the standard library's speed on numbers), and through
    the standard library when orjson refuses what Python's own ``json.dumps`` writes by
    default (NaN, Infinity) or an integer past 64 bits."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


def parse_body(body: bytes, content_type: str) -> ByDate | ByRecords | pl.DataFrame:
    """The request's body as one of the three forms; 422 when it is none of them."""
    if content_type.split(";")[0].strip().lower() == ARROW:
        try:
            return pl.read_ipc_stream(io.BytesIO(body))
        except Exception as exc:  # polars and Arrow raise several kinds for a bad stream
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise unprocessable("body", f"not an Arrow IPC stream ({first})") from None
    try:
        data = _json_loads(body or b"null")
    except ValueError as exc:
        raise unprocessable("body", f"not JSON ({exc}); send JSON or an Arrow IPC stream "
                            f"with Content-Type: {ARROW}") from None  # fmt: skip
    if not isinstance(data, dict):
        raise unprocessable("body", 'send an object: {"instruments": [...], "date": '
                            '"YYYY-MM-DD"} or {"records": [...]}')  # fmt: skip
    try:
        if "records" in data:
            return ByRecords.model_validate(data)
        return ByDate.model_validate(data)
    except ValidationError as exc:
        raise _problems(exc) from None


def needed(packaged: Packaged) -> list[str]:
    """The raw feature columns a table must carry: the recipe's inputs (the fitted
    processors read all they were fitted on), else the model's own columns."""
    return list(packaged.inputs()) or list(packaged.columns)


_NUMBER = (int, float, bool, type(None))  # what a feature's value may be in JSON


def _not_a_number(records: list[dict[str, Any]], features: list[str]) -> HTTPException | None:
    """The 422 for the first record with a feature value that is not a number, if any."""
    for i, record in enumerate(records):
        for c in features:
            if type(record.get(c)) not in _NUMBER:
                message = f"{record[c]!r} is not a number (null if missing)"
                return unprocessable(f"records[{i}].{c}", message)
    return None


def _records_frame(records: list[dict[str, Any]], packaged: Packaged) -> pl.DataFrame:
    try:
        return pl.DataFrame(records, infer_schema_length=None)
    except Exception as exc:  # mixed types in a column, nested values ...
        named = _not_a_number(records, needed(packaged))
        if named is not None:
            raise named from None
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise unprocessable("records", f"cannot be read as a table ({first})") from None


def table(
    frame: pl.DataFrame,
    packaged: Packaged,
    where: str,
    records: list[dict[str, Any]] | None = None,
) -> pl.DataFrame:
    """``frame`` checked and typed for ``packaged``: instrument (text), date (a day) and
    each feature it reads (a float; null is a missing value). ``where`` names the body's
    field in the messages (``records``, or ``body`` for Arrow); ``records`` are the rows
    ``frame`` was read from, if so, to name the one with a value that is not a number."""
    row = "records[{}]" if where == "records" else "row {}"
    features = needed(packaged)
    missing = [c for c in (*KEYS, *features) if c not in frame.columns]
    if missing:
        raise unprocessable(
            f"{where}.{missing[0]}" if where == "records" else where,
            f"no column {missing[0]!r}: give each row instrument, date and the features the "
            f"model reads ({', '.join(features[:20])}{', ...' if len(features) > 20 else ''})",
        )
    out = frame.select(*KEYS, *features)
    if out.height == 0:
        raise unprocessable(where, "no rows to score")
    dates = out["date"]
    if dates.dtype == pl.String:
        parsed = dates.str.to_date("%Y-%m-%d", strict=False)
        bad = parsed.is_null()
    elif dates.dtype == pl.Date:
        parsed, bad = dates, dates.is_null()
    elif isinstance(dates.dtype, pl.Datetime):
        parsed = dates.dt.date()
        bad = parsed.is_null()
    else:
        raise unprocessable(f"{where}.date", f"a {dates.dtype} column: give days, YYYY-MM-DD")
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise unprocessable(f"{row.format(i)}.date",
                            f"{dates[i]!r} is not a day: write YYYY-MM-DD")  # fmt: skip
    names = out["instrument"]
    if names.dtype != pl.String or names.is_null().any():
        i = int(np.flatnonzero(names.is_null().to_numpy())[0]) if names.is_null().any() else 0
        raise unprocessable(f"{row.format(i)}.instrument", "give each row an instrument (text)")
    schema = out.schema
    for c in features:
        if schema[c].is_numeric() or schema[c] in (pl.Null, pl.Boolean):  # true is 1, false 0
            continue
        named = _not_a_number(records, [c]) if records is not None else None
        if named is not None:  # the values as sent: a frame has made 0.2 and "x" both text
            raise named
        # an Arrow column is of one type: its first value is the first wrong one
        given = np.flatnonzero(out[c].is_not_null().to_numpy())
        i = int(given[0]) if given.size else 0
        raise unprocessable(f"{row.format(i)}.{c}",
                            f"{out[c][i]!r} is not a number (null if missing)")  # fmt: skip
    # one expression for every feature: a cast per column, each its own Series operation,
    # cost a one-row request more than 1 ms of 158 features
    return out.select(pl.col("instrument"), parsed.alias("date"), pl.col(features).cast(pl.Float64))


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class RowScorer:
    """A loaded version's scorer of rows as a matrix: the raw features it reads, in order,
    and its ``matrix_scorer`` for them, prepared once when the version is loaded."""

    names: list[str]
    score: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def of(cls, packaged: Packaged) -> RowScorer | None:
        """The scorer of ``packaged``, or None when its processors read whole dates (or it
        cannot make one: the frame route still scores it, and says what is wrong)."""
        if not getattr(packaged, "row_wise", False):
            return None
        names = needed(packaged)
        try:
            return cls(names, packaged.matrix_scorer(names))
        except Exception:  # any failure here leaves the frame route
            return None


@dataclass(frozen=True)
class Scored:
    """Rows' scores as plain lists (a frame costs a one-row answer more than its scoring
    does)."""

    instrument: list[str]
    date: list[dt.date]
    score: list[float]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"instrument": self.instrument, "date": self.date, "score": self.score},
            schema={"instrument": pl.String, "date": pl.Date, "score": pl.Float64},
        )


def score_records(rows: RowScorer, records: list[dict[str, Any]]) -> Scored | None:
    """Scores of records read from their Python values straight into a matrix (building
    and checking a frame of 158 columns cost a one-row prediction milliseconds), or None
    for a body with anything unusual (an absent key, a value not a number, a date not
    written YYYY-MM-DD), which the frame route then reads, or refuses with the field
    named."""
    names = rows.names
    matrix = np.empty((len(records), len(names)), dtype=np.float64)
    instruments, days = [], []
    nan = float("nan")
    try:
        for i, record in enumerate(records):
            instrument, day = record["instrument"], record["date"]
            if type(instrument) is not str or type(day) is not str or not _DAY.fullmatch(day):
                return None
            values = [record[c] for c in names]
            if not all(type(v) in _NUMBER for v in values):
                return None
            matrix[i] = [nan if v is None else v for v in values]
            instruments.append(instrument)
            days.append(dt.date.fromisoformat(day))
    except (KeyError, ValueError, OverflowError):  # an absent key, a 2021-02-30, a 1e999 int
        return None
    return Scored(instruments, days, rows.score(matrix).tolist())


def score_table(
    packaged: Packaged, body: ByRecords | pl.DataFrame, rows: RowScorer | None = None
) -> pl.DataFrame | Scored:
    """Scores of a table body: instrument, date, score in the body's row order; ``rows``,
    the version's matrix scorer, if it has one (``RowScorer.of``)."""
    if isinstance(body, ByRecords):
        scored = score_records(rows, body.records) if rows is not None else None
        if scored is not None:
            return scored
        records = body.records
        frame = table(_records_frame(records, packaged), packaged, "records", records)
    else:
        frame = table(body, packaged, "body")
    return _scored(packaged, frame)


def _scored(packaged: Packaged, frame: pl.DataFrame) -> pl.DataFrame:
    scores = np.asarray(packaged.score(frame), dtype=np.float64).reshape(-1)
    return frame.select(*KEYS).with_columns(score=pl.Series(scores, dtype=pl.Float64))


# Concurrent requests for one day compute its features once: the second waits for the
# first, then finds them in the feature cache.
_DAY_LOCKS: dict[tuple[Any, ...], threading.Lock] = {}
_DAY_LOCKS_GUARD = threading.Lock()


def _day_lock(key: tuple[Any, ...]) -> threading.Lock:
    with _DAY_LOCKS_GUARD:
        if len(_DAY_LOCKS) > 1024:  # a bound: old days' locks are not worth keeping
            _DAY_LOCKS.clear()
        return _DAY_LOCKS.setdefault(key, threading.Lock())


def by_date(
    packaged: Packaged, store: Any, body: ByDate, *, universe: str | None = None
) -> pl.DataFrame:
    """Scores of the instruments of ``body`` on its date, from the model's own features
    computed from ``store`` (see the module's docstring); 422 when the store has no bars
    that day."""
    from quarry.models._inputs import features_for

    day = body.date
    universe = body.universe or universe
    key = (str(store), day, body.as_of, universe, tuple(sorted(packaged.inputs().items())))
    try:
        with _day_lock(key):
            frame = features_for(packaged, store, start=day, end=day, universe=universe,
                                 as_of=body.as_of)  # fmt: skip
    except DataError as exc:
        raise unprocessable("date", f"{day}: {exc}") from None
    if frame.height == 0:
        raise unprocessable("date", f"{day}: no bars in the store on that day (not a trading "
                            "day, or outside the store's history); give a trading day")  # fmt: skip
    scored = _scored(packaged, frame)
    if body.instruments is None:
        return scored.sort("instrument")
    asked = pl.DataFrame({"instrument": body.instruments}, schema={"instrument": pl.String})
    out = asked.join(scored.drop("date"), on="instrument", how="left", maintain_order="left")
    if out["score"].is_null().all():
        raise unprocessable(
            "instruments", f"none of them has a bar on {day} in the store; check the names"
        )
    return out.select("instrument", pl.lit(day).alias("date"), "score")


def to_json(name: str, alias: str, version: int, scored: pl.DataFrame | Scored) -> bytes:
    """The JSON answer: who scored, and the rows (a NaN or missing score as null)."""
    if isinstance(scored, pl.DataFrame):
        scored = Scored(*(scored[c].to_list() for c in ("instrument", "date", "score")))
    rows = [
        {"instrument": i, "date": d.isoformat(), "score": s if s is not None and s == s else None}
        for i, d, s in zip(scored.instrument, scored.date, scored.score, strict=True)
    ]
    body = {"model": name, "alias": alias, "version": version, "predictions": rows}
    return json.dumps(body, allow_nan=False).encode()


def to_arrow(scored: pl.DataFrame | Scored) -> bytes:
    """The Arrow answer: an IPC stream of instrument, date, score."""
    sink = io.BytesIO()
    frame = scored.frame() if isinstance(scored, Scored) else scored
    frame.select(*KEYS, "score").write_ipc_stream(sink)
    return sink.getvalue()
