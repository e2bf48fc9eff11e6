"""A window no row falls in: a one-line refusal by default, or (``allow_empty``, what serving
asks for) a valid file of no rows with the columns and types of a non-empty run."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from quarry.data import Store, generate
from quarry.exceptions import DataError
from quarry.features import FeatureCache, materialize
from quarry.features._outofcore import TableOut

FEATURES = {"MA5": "Mean($close, 5)/$close", "R": "CSRank($close)"}
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"
LATER = {"start": date(2030, 1, 1), "end": date(2030, 2, 1)}  # past the store's history


@pytest.fixture
def market(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    generate(store, 6, 60, seed=4)
    return store


@pytest.mark.parametrize("cached", [False, True])
def test_an_empty_window_is_refused_in_one_line_or_written_as_an_empty_file(
    market: Store, tmp_path: Path, cached: bool
) -> None:
    cache = FeatureCache(tmp_path / "cache") if cached else None
    # the reference: the schema and metadata of a run that has rows
    full = tmp_path / "full.parquet"
    materialize(market, FEATURES, full, label=LABEL, cache=cache)
    reference = pl.read_parquet(full)
    assert reference.height > 0
    assert reference.columns == ["instrument", "date", "MA5", "R", "LABEL0"]

    out = tmp_path / "empty.parquet"
    refused = (r"^no bar from 2030-01-01 to 2030-02-01 \(the bars run from 2015-01-02 to "
               r".*\): the window and universe match no rows")  # fmt: skip
    with pytest.raises(DataError, match=refused):
        materialize(market, FEATURES, out, label=LABEL, cache=cache, **LATER)
    assert not out.exists()

    done = materialize(market, FEATURES, out, label=LABEL, cache=cache, allow_empty=True, **LATER)
    assert done.rows == 0
    empty = pl.read_parquet(out)
    assert empty.height == 0
    assert empty.schema == reference.schema
    assert pq.read_schema(out).metadata == pq.read_schema(full).metadata

    if cached:  # the entry of no rows is now cached: a later run is still refused
        again = tmp_path / "again.parquet"
        with pytest.raises(DataError, match=r"^no bar from 2030-01-01 to 2030-02-01: the window"):
            materialize(market, FEATURES, again, label=LABEL, cache=cache, **LATER)
        assert not again.exists()


@pytest.mark.parametrize("name", ["out.parquet", "out.arrow", "parts"])
def test_a_writer_given_no_chunk_still_writes_the_schema(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    writer = TableOut(out, {"quarry.label": "L"}, columns=["A", "LABEL0"])
    writer.close()
    frame = pl.read_ipc(out) if name.endswith(".arrow") else pl.read_parquet(out)
    assert frame.height == 0
    assert frame.schema == pl.Schema(
        {"instrument": pl.String, "date": pl.Date, "A": pl.Float32, "LABEL0": pl.Float32}
    )
    assert not (tmp_path / f".{name}.partial").exists()
