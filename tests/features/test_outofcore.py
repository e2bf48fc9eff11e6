"""Out-of-core computation: chunks of instruments (time series), whole-universe panels for
cross-sectional operators, bounded memory, nothing half-written on failure. The reference is
the in-memory ``compute`` on the same bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quarry.exceptions import ExpressionError, UsageError
from quarry.features import Plan, compute
from quarry.features._grid import Grid
from quarry.features._outofcore import compute_to_parquet, parse_size, peak_panels
from tests.features.helpers import make_frame

FEATURES = {
    "ma": "Mean($close, 5) / $close",
    "corr": "Corr($close, Log($volume), 6)",
    "q": "Quantile($close, 4, 0.8)",
    "rank": "CSRank(Ref($close, 1) / $close)",
    # time series over a cross-section over a time series: two cross-sectional levels
    "nested": "CSZScore(Mean(CSRank($close), 3) - $volume)",
    "plain": "$close",
    "mask": 'Mean($close, 3) / Mask(Mean($close, 3), "A")',
}


def _grid(frame: pl.DataFrame, plan: Plan) -> Grid:
    return Grid.from_frame(frame, sorted(plan.fields), keep_rows=False)


@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_chunked_output_equals_the_in_memory_result(tmp_path: Path, chunk: int) -> None:
    frame = make_frame()
    label = "Ref($close, -2) / Ref($close, -1) - 1"
    plan = Plan.build(FEATURES, label=label)
    out = tmp_path / "f.parquet"
    written = compute_to_parquet(_grid(frame, plan), plan, out, instruments_per_chunk=chunk)
    got = pl.read_parquet(out)
    expected = compute(frame, FEATURES, label=label).sort("instrument", "date")
    assert got.columns == expected.columns
    assert got.select("instrument", "date").equals(expected.select("instrument", "date"))
    for name in [*FEATURES, "LABEL0"]:
        assert got[name].dtype == pl.Float32
        np.testing.assert_allclose(
            got[name].cast(pl.Float64).to_numpy(),
            expected[name].to_numpy(),
            rtol=1e-6,
            equal_nan=True,
            err_msg=name,
        )
    assert written.rows == got.height
    assert written.chunks == -(-4 // chunk)  # four instruments


def test_a_directory_gets_one_part_per_chunk_and_emit_filters_rows(tmp_path: Path) -> None:
    frame = make_frame()
    plan = Plan.build({"m": "Mean($close, 3)"})
    grid = _grid(frame, plan)
    emit = grid.present.copy()
    emit[:, :20] = False  # only the last 20 days
    out = tmp_path / "parts"
    compute_to_parquet(grid, plan, out, emit=emit, instruments_per_chunk=2)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    got = pl.read_parquet(out / "*.parquet").sort("instrument", "date")
    expected = compute(frame, {"m": "Mean($close, 3)"}).sort("instrument", "date")
    cutoff = grid.calendar[20]
    expected = expected.filter(pl.col("date") >= cutoff)  # history before it was still used
    np.testing.assert_allclose(
        got["m"].cast(pl.Float64).to_numpy(), expected["m"].to_numpy(), rtol=1e-6, equal_nan=True
    )


def test_memory_sets_the_chunk_size_and_too_little_is_a_clear_error(tmp_path: Path) -> None:
    frame = make_frame()
    plan = Plan.build(FEATURES)
    grid = _grid(frame, plan)
    assert peak_panels(plan) >= 5
    with pytest.raises(UsageError, match=r"too small .* give --memory"):
        compute_to_parquet(grid, plan, tmp_path / "f.parquet", memory="100MB")
    assert not (tmp_path / "f.parquet").exists()
    written = compute_to_parquet(grid, plan, tmp_path / "f.parquet", memory="1GB")
    assert written.chunks == 1


def test_a_failure_leaves_the_previous_output_in_place(tmp_path: Path) -> None:
    frame = make_frame()
    out = tmp_path / "f.parquet"
    good = Plan.build({"m": "Mean($close, 3)"})
    compute_to_parquet(_grid(frame, good), good, out)
    before = out.read_bytes()
    bad = Plan.build({"m": "Mean($close, 3)", "n": "CSNeutralize($close, $industry)"})
    grid = _grid(frame, good)  # no $industry laid out: the run fails midway
    with pytest.raises((RuntimeError, KeyError, ExpressionError)):
        compute_to_parquet(grid, bad, out, instruments_per_chunk=1)
    assert out.read_bytes() == before
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_sizes_parse() -> None:
    assert parse_size("4GB") == 4 * 2**30
    assert parse_size("512mib") == 512 * 2**20
    assert parse_size("1.5g") == int(1.5 * 2**30)
    with pytest.raises(UsageError, match="write it like 4GB"):
        parse_size("lots")


def test_the_file_says_how_its_columns_were_made(tmp_path: Path) -> None:
    import json

    import pyarrow.parquet as pq

    frame = make_frame()
    label = "Ref($close, -2) / Ref($close, -1) - 1"
    plan = Plan.build({"ma": "Mean($close, 5) / $close"}, label=label)
    compute_to_parquet(_grid(frame, plan), plan, tmp_path / "f.parquet")
    meta = pq.read_schema(tmp_path / "f.parquet").metadata
    assert json.loads(meta[b"quarry.features"]) == {"ma": "(Mean($close, 5) / $close)"}
    assert meta[b"quarry.label"].decode() == str(plan.outputs["LABEL0"])
