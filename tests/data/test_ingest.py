"""Ingesting files: the arguments an ingest refuses, and the defaults it fills in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from quarry.data import Store, ingest_file
from quarry.exceptions import UsageError

HEADER = "instrument,date,open,high,low,close,volume,vwap"


def test_future_knowledge_time_is_refused(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv("b.csv", f"{HEADER}\nA,2020-01-02,1,2,1,1,1,1")
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    with pytest.raises(UsageError, match="in the future"):
        ingest_file(store, "bars", path, knowledge_time=future)
    assert store.commits() == []


def test_skip_bad_is_refused_for_universe_files(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv("u.csv", "instrument,start,end\nA,2020-01-01,\nB,bad,")
    with pytest.raises(UsageError, match="--skip-bad does not apply to universe"):
        ingest_file(store, "universe", path, universe="u", skip_bad=True)


def test_empty_valid_from_defaults_to_list_date(
    store: Store, write_csv: Callable[[str, str], Path]
) -> None:
    path = write_csv("i.csv", "instrument,list_date,valid_from,industry\nA,2010-01-04,,Tech")
    ingest_file(store, "instruments", path)
    got = store.scan("instruments")
    assert got is not None
    assert got.select("valid_from").collect().item() == date(2010, 1, 4)
