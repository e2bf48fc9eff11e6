"""Market data messages: bar snapshots as Arrow IPC, single bars as JSON, checked on arrival.

A snapshot is one message per bar time holding every instrument that updated, as real feeds
batch them: an Arrow IPC stream with a column ``instrument``, the bar's fields, and its
time, either in the schema's metadata (``quarry.time``, ISO 8601) or as a ``date`` column
holding one value. A single bar is a JSON object with ``instrument``, ``time`` and fields;
single bars of one time are gathered until a later time arrives (``complete`` is False).

Anything else is ``Malformed``, with the reason the dead-letter subject records.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

__all__ = ["Bars", "Malformed", "as_time", "decode", "decode_frame", "encode", "encode_frame"]

TIME_KEY = b"quarry.time"
TIME = pl.Datetime("us", "UTC")


class Malformed(ValueError):
    """A message that is not bars: its reason is what the dead-letter subject records."""


@dataclass(frozen=True)
class Bars:
    time: datetime
    frame: pl.DataFrame  # instrument and fields, one row per instrument
    complete: bool  # a whole snapshot (True) or one instrument's bar (False)


def as_time(value: object) -> datetime:
    """A bar time in UTC from a datetime, a date (midnight) or ISO 8601 text (a naive one is
    read as UTC); Malformed otherwise."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            return as_time(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            pass
    raise Malformed(f"bar time {value!r} is not an ISO 8601 time such as 2024-01-02T14:30:00Z")


def encode(time: datetime, frame: pl.DataFrame) -> bytes:
    """One snapshot: the bars of ``frame`` (instrument and fields) at ``time``."""
    table = frame.drop("date", strict=False).to_arrow()
    table = table.replace_schema_metadata({TIME_KEY: as_time(time).isoformat().encode()})
    return encode_frame(table)


def encode_frame(table: pa.Table | pl.DataFrame) -> bytes:
    """A table as one Arrow IPC stream (the outputs' format too)."""
    if isinstance(table, pl.DataFrame):
        table = table.to_arrow()
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def decode_frame(data: bytes) -> pl.DataFrame:
    """A table ``encode_frame`` wrote."""
    frame = pl.from_arrow(ipc.open_stream(io.BytesIO(data)).read_all())
    assert isinstance(frame, pl.DataFrame)
    return frame


def decode(data: bytes, fields: tuple[str, ...]) -> Bars:
    """The bars a message carries, with every field in ``fields`` as Float64; raises
    Malformed naming what is wrong."""
    if not data:
        raise Malformed("empty message")
    if data[:1] in (b"{", b"["):
        return _decode_json(data, fields)
    try:
        table = ipc.open_stream(io.BytesIO(data)).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise Malformed(f"neither an Arrow IPC stream nor JSON: {e}") from None
    frame = pl.from_arrow(table)
    if not isinstance(frame, pl.DataFrame):
        raise Malformed("the Arrow stream holds no table")
    meta = table.schema.metadata or {}
    if TIME_KEY in meta:
        time = as_time(meta[TIME_KEY].decode())
    elif "date" in frame.columns and frame.height:
        times = frame["date"].unique()
        if times.len() != 1:
            raise Malformed(f"a snapshot holds one bar time; this one holds {times.len()}")
        time = as_time(times[0])
    else:
        raise Malformed("no bar time: give the schema metadata quarry.time or a date column")
    return Bars(time, _checked(frame, fields, "the snapshot"), complete=True)


def _decode_json(data: bytes, fields: tuple[str, ...]) -> Bars:
    try:
        record = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise Malformed(f"not valid JSON: {e}") from None
    if not isinstance(record, dict):
        raise Malformed("a JSON bar is one object with instrument, time and fields")
    if "time" not in record:
        raise Malformed("the JSON bar has no 'time'")
    time = as_time(record.pop("time"))
    for name in fields:
        if name in record and not isinstance(record[name], int | float | type(None)):
            raise Malformed(f"field {name!r} is {record[name]!r}, not a number")
    try:
        frame = pl.DataFrame([record])
    except (TypeError, ValueError, pl.exceptions.PolarsError) as e:
        raise Malformed(f"the JSON bar cannot be read as a row: {e}") from None
    return Bars(time, _checked(frame, fields, "the bar"), complete=False)


def _checked(frame: pl.DataFrame, fields: tuple[str, ...], what: str) -> pl.DataFrame:
    if "instrument" not in frame.columns:
        raise Malformed(f"{what} has no instrument column")
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise Malformed(f"{what} lacks field(s) {', '.join(missing)}")
    if frame["instrument"].null_count():
        raise Malformed(f"{what} has a row without an instrument")
    casts = []
    for name in fields:
        dtype = frame[name].dtype
        if not (dtype.is_numeric() or dtype == pl.Null):
            raise Malformed(f"field {name!r} holds {dtype} values, not numbers")
        casts.append(pl.col(name).cast(pl.Float64))
    out = frame.select(pl.col("instrument").cast(pl.String), *casts)
    if out["instrument"].n_unique() < out.height:  # counted in Arrow; found only if so
        dup = out.filter(pl.col("instrument").is_duplicated())
        raise Malformed(f"{what} repeats instrument {dup['instrument'][0]!r}")
    return out
