"""The store on a real S3-compatible server (moto's standalone server on loopback)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, ingest_file, ingest_frame, read_bars, table_spec
from quarry.exceptions import ConflictError
from tests.helpers import bars_frame

pytestmark = pytest.mark.service


def test_s3_ingest_read_as_of_and_versions(
    s3_env: dict[str, str], write_csv: Callable[[str, str], Path]
) -> None:
    store = Store(f"s3://{s3_env['bucket']}/research/store")
    first = write_csv(
        "bars.csv",
        "instrument,date,open,high,low,close,volume\n"
        "A,2020-01-02,10,11,9,10.5,1000\nB,2020-01-02,20,21,19,20.5,500",
    )
    ingest_file(store, "bars", first, knowledge_time="2020-01-03")
    fix = write_csv(
        "fix.csv", "instrument,date,open,high,low,close,volume\nA,2020-01-02,10,11,9,10.7,1000"
    )
    ingest_file(store, "bars", fix, knowledge_time="2020-01-10")
    old = read_bars(store, ["close"], as_of="2020-01-05")
    new = read_bars(store, ["close"])
    assert old["close"].to_list() == [10.5, 20.5]
    assert new["close"].to_list() == [10.7, 20.5]
    assert [(c.table, c.version, c.rows) for c in store.commits()] == [
        ("bars", 0, 2),
        ("bars", 1, 1),
    ]
    # A second Store object (another process, say) sees the same data.
    assert_frame_equal(read_bars(Store(store.location.uri), ["close"]), new)


def test_s3_stale_writer_gets_a_conflict(s3_env: dict[str, str]) -> None:
    store = Store(f"s3://{s3_env['bucket']}/conflict")
    bars = table_spec("bars")
    ingest_frame(store, bars, bars_frame([("A", "2020-01-02", 1.0)]), knowledge_time="2020-01-03")
    stale = store.table("bars")
    ingest_frame(store, bars, bars_frame([("A", "2020-01-02", 2.0)]), knowledge_time="2020-01-04")
    with pytest.raises(ConflictError):
        store.commit(
            bars,
            bars_frame([("A", "2020-01-02", 3.0)]),
            knowledge_time=datetime(2020, 1, 5, tzinfo=UTC),
            base=stale,
        )
    assert read_bars(store, ["close"])["close"].to_list() == [2.0]
    assert pl.Series([c.version for c in store.commits()]).to_list() == [0, 1]
