"""Bar messages: snapshots and single bars read back, and each malformed kind named."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import polars as pl
import pytest

from quarry.stream import Malformed, decode, encode
from quarry.stream._snapshots import encode_frame

FIELDS = ("close", "volume")
T = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def test_a_snapshot_reads_back_with_its_time_and_fields_as_floats() -> None:
    frame = pl.DataFrame({"instrument": ["A", "B"], "close": [1.5, 2.0], "volume": [10, 20]})
    bars = decode(encode(T, frame), FIELDS)
    assert bars.time == T and bars.complete
    assert bars.frame.to_dicts() == [
        {"instrument": "A", "close": 1.5, "volume": 10.0},
        {"instrument": "B", "close": 2.0, "volume": 20.0},
    ]


def test_a_snapshot_may_carry_its_time_as_a_date_column() -> None:
    frame = pl.DataFrame({"instrument": ["A"], "date": [date(2024, 1, 2)], "close": [1.0],
                          "volume": [1.0]})  # fmt: skip
    bars = decode(encode_frame(frame), FIELDS)
    assert bars.time == datetime(2024, 1, 2, tzinfo=UTC)


def test_a_single_bar_is_json_and_not_complete() -> None:
    body = json.dumps({"instrument": "A", "time": "2024-01-02T14:30:00Z", "close": 3.0,
                       "volume": 5}).encode()  # fmt: skip
    bars = decode(body, FIELDS)
    assert (bars.time, bars.complete) == (T, False)
    assert bars.frame.row(0) == ("A", 3.0, 5.0)


def _ipc(frame: pl.DataFrame) -> bytes:
    return encode(T, frame)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty message"),
        (b"\x00garbage", "neither an Arrow IPC stream nor JSON"),
        (b"{not json", "not valid JSON"),
        (b'{"instrument": "A", "close": 1, "volume": 1}', "has no 'time'"),
        (b'{"instrument": "A", "time": "soon", "close": 1, "volume": 1}', "not an ISO 8601"),
        (b'{"instrument": "A", "time": "2024-01-02", "close": "x", "volume": 1}',
         "field 'close' is 'x', not a number"),
        (_ipc(pl.DataFrame({"instrument": ["A"], "close": [1.0]})), "lacks field(s) volume"),
        (_ipc(pl.DataFrame({"close": [1.0], "volume": [1.0]})), "has no instrument column"),
        (_ipc(pl.DataFrame({"instrument": ["A", "A"], "close": [1.0, 2], "volume": [1.0, 1]})),
         "repeats instrument 'A'"),
        (_ipc(pl.DataFrame({"instrument": ["A"], "close": ["1"], "volume": [1.0]})),
         "holds String values"),
        (encode_frame(pl.DataFrame({"instrument": ["A"], "close": [1.0], "volume": [1.0]})),
         "no bar time"),
    ],
)  # fmt: skip
def test_malformed_messages_are_named(body: bytes, reason: str) -> None:
    with pytest.raises(Malformed) as caught:
        decode(body, FIELDS)
    assert reason in str(caught.value)
