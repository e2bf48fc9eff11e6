"""Out-of-core computation: chunks of instruments (time series), whole-universe panels for
cross-sectional operators, bounded memory, nothing half-written on failure. The reference is
the in-memory ``compute`` on the same bars."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.exceptions import ExpressionError, UsageError
from quarry.features import Plan, compute
from quarry.features._grid import Grid
from quarry.features._outofcore import TableOut, compute_to_file, parse_size, peak_panels
from quarry.features._tables import read_frame, read_schema
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


@pytest.mark.parametrize("name", ["f.parquet", "f.arrow", "F.IPC"])
@pytest.mark.parametrize("chunk", [1, 3, 100])
def test_chunked_output_equals_the_in_memory_result(tmp_path: Path, chunk: int, name: str) -> None:
    frame = make_frame()
    label = "Ref($close, -2) / Ref($close, -1) - 1"
    plan = Plan.build(FEATURES, label=label)
    out = tmp_path / name
    written = compute_to_file(_grid(frame, plan), plan, out, instruments_per_chunk=chunk)
    got = read_frame([out])
    kind = "arrow" if name != "f.parquet" else "parquet"
    assert (pl.read_ipc if kind == "arrow" else pl.read_parquet)(out).equals(got)  # that format
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
    compute_to_file(grid, plan, out, emit=emit, instruments_per_chunk=2)
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
        compute_to_file(grid, plan, tmp_path / "f.parquet", memory="100MB")
    assert not (tmp_path / "f.parquet").exists()
    written = compute_to_file(grid, plan, tmp_path / "f.parquet", memory="1GB")
    assert written.chunks == 1


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads Linux's /proc")
@pytest.mark.parametrize("name", ["f.parquet", "f.arrow"])
def test_no_file_is_left_open_once_written(tmp_path: Path, name: str) -> None:
    import os

    writer = TableOut(tmp_path / name, {"quarry.label": "L"}, columns=["m"])
    chunk = pl.DataFrame({"instrument": ["A"], "date": [date(2024, 1, 2)], "m": [1.5]})
    writer.write(chunk.with_columns(pl.col("m").cast(pl.Float32)))
    writer.close()  # the writer itself still held, as materialize holds it
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            held.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue  # the listing's own descriptor, closed by now
    assert not [path for path in held if path.startswith(str(tmp_path))]
    read = pl.read_ipc if name.endswith(".arrow") else pl.read_parquet
    assert read(tmp_path / name).height == 1


@pytest.mark.parametrize("name", ["f.parquet", "f.arrow"])
def test_a_failure_leaves_the_previous_output_in_place(tmp_path: Path, name: str) -> None:
    frame = make_frame()
    out = tmp_path / name
    good = Plan.build({"m": "Mean($close, 3)"})
    compute_to_file(_grid(frame, good), good, out)
    before = out.read_bytes()
    bad = Plan.build({"m": "Mean($close, 3)", "n": "CSNeutralize($close, $industry)"})
    grid = _grid(frame, good)  # no $industry laid out: the run fails midway
    with pytest.raises((RuntimeError, KeyError, ExpressionError)):
        compute_to_file(grid, bad, out, instruments_per_chunk=1)
    assert out.read_bytes() == before
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_sizes_parse() -> None:
    assert parse_size("4GB") == 4 * 2**30
    assert parse_size("512mib") == 512 * 2**20
    assert parse_size("1.5g") == int(1.5 * 2**30)
    with pytest.raises(UsageError, match="write it like 4GB"):
        parse_size("lots")


@pytest.mark.parametrize("name", ["f.parquet", "f.feather"])
def test_the_file_says_how_its_columns_were_made(tmp_path: Path, name: str) -> None:
    import json

    frame = make_frame()
    label = "Ref($close, -2) / Ref($close, -1) - 1"
    plan = Plan.build({"ma": "Mean($close, 5) / $close"}, label=label)
    compute_to_file(_grid(frame, plan), plan, tmp_path / name)
    meta = read_schema(tmp_path / name).metadata
    assert json.loads(meta[b"quarry.features"]) == {"ma": "(Mean($close, 5) / $close)"}
    assert meta[b"quarry.label"].decode() == str(plan.outputs["LABEL0"])


# -- chunks through an executor -----------------------------------------------------------

STORE_FEATURES = {
    "ma": "Mean($close, 5) / $close",
    "corr": "Corr($close, Log($volume), 6)",
    "rank": "CSRank(Ref($close, 1) / $close)",  # a cross-section of a computed argument
    "nested": "CSZScore(Mean(CSRank($close), 3) - $volume)",  # and of a bare field, nested
    "plain": "$close",
}


def _finished_tasks(dashboard: str, job: str, at_least: int) -> int:
    """Ray tasks of ``job`` finished, as the dashboard tells once their events arrive."""
    import time

    from ray.util.state import list_tasks

    deadline, count = time.monotonic() + 30, 0
    while time.monotonic() < deadline:
        tasks = list_tasks(address=dashboard, filters=[("job_id", "=", job)],
                           raise_on_missing_output=False, limit=10_000)  # fmt: skip
        count = sum(1 for t in tasks if t.state == "FINISHED")
        if count >= at_least:
            break
        time.sleep(0.5)
    return count


@pytest.mark.slow
def test_ray_chunks_write_the_local_output_bit_for_bit(ray_cluster: Any, tmp_path: Path) -> None:
    from quarry.data import Store, generate, read_bars
    from quarry.executors import executor
    from quarry.features import materialize
    from quarry.features._outofcore import _BASELINE

    store = Store(tmp_path / "store")
    generate(store, 30, 300, seed=4)
    label = "Ref($close, -2) / Ref($close, -1) - 1"
    memory = str(_BASELINE + 3 * 2**19)  # 1.5 MiB beyond the baseline: several chunks
    local = materialize(store, STORE_FEATURES, tmp_path / "local.parquet", label=label,
                        memory=memory)  # fmt: skip
    with executor("ray", address=ray_cluster.address) as ex:
        import ray

        job = ray.get_runtime_context().get_job_id()
        before = _finished_tasks(ray_cluster.dashboard, job, 0)
        remote = materialize(store, STORE_FEATURES, tmp_path / "ray.parquet", label=label,
                             memory=memory, executor=ex)  # fmt: skip
        # every chunk a task: its output frame, and its rows of each cross-sectional
        # node's computed argument (CSRank($close) reads a field: nothing to compute)
        tasks = 3 * remote.chunks
        assert _finished_tasks(ray_cluster.dashboard, job, before + tasks) == before + tasks
    assert 1 < local.chunks <= remote.chunks  # Ray runs two at once: smaller chunks
    got, expected = pl.read_parquet(tmp_path / "ray.parquet"), pl.read_parquet(local.path)
    assert_frame_equal(got, expected, check_exact=True)
    assert got.height == local.rows == remote.rows
    # and both are the in-memory computation
    bars = read_bars(store, ["close", "volume"], adjust="adjusted")
    reference = compute(bars, STORE_FEATURES, label=label).sort("instrument", "date")
    for name in [*STORE_FEATURES, "LABEL0"]:
        np.testing.assert_allclose(got[name].cast(pl.Float64).to_numpy(),
                                   reference[name].to_numpy(), rtol=1e-6, equal_nan=True,
                                   err_msg=name)  # fmt: skip
