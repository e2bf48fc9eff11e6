"""The stream's store: a bar's scores as one record, read back as published; old folders."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import polars as pl
import pytest

from quarry.exceptions import UsageError
from quarry.stream import OutputStore
from quarry.stream._outputs import BarRecord
from quarry.stream._snapshots import decode_frame, encode_frame


def scores(bar: str, values: list[float], version: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {"bar_time": bar, "instrument": [f"S{i}" for i in range(len(values))],
         "score": values, "model_version": version},
        schema_overrides={"model_version": pl.Int64},
    )  # fmt: skip


def test_a_bars_scores_are_one_record_read_back_as_published(tmp_path: Path) -> None:
    store = OutputStore(tmp_path)
    first, second = scores("t1", [0.5, -1.0, 2.0]), scores("t2", [1.5, 0.25])
    for i, frame in enumerate((first, second)):
        record = BarRecord(frame["bar_time"][0], i, frame.height, 3, True, False)
        bodies = {"scores": encode_frame(frame)}
        store.store(record, {"scores": frame}, [], bodies=bodies)
    # a bar stored again (a restart that processed it again) replaces its record
    again = scores("t2", [9.0, 8.0])
    store.store(BarRecord("t2", 1, 2, 3, True, False), {"scores": again}, [])
    rows = store.db.execute("SELECT bar_time, instruments FROM scores ORDER BY bar_time")
    assert rows.fetchall() == [("t1", 3), ("t2", 2)]
    assert store.table("scores").equals(pl.concat([first, again]))
    assert decode_frame(store.bodies("t1")["scores"]).equals(first)
    assert set(store.bodies("t1")) == {"scores", "positions", "orders"}
    store.close()


def test_a_folder_from_before_scores_were_records_is_refused_by_name(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "stream.db") as db:
        db.execute("CREATE TABLE scores (bar_time TEXT, instrument TEXT, score REAL, "
                   "model_version INTEGER, PRIMARY KEY (bar_time, instrument))")  # fmt: skip
    with pytest.raises(UsageError, match=r"stream\.db: written by an earlier Quarry.*new outputs"):
        OutputStore(tmp_path)
