"""Both executors give the same answer in the items' order; the Ray one runs the pieces as
tasks on a real cluster, reads shared values from the object store without a copy, and
raises a piece's QuarryError as itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from quarry.exceptions import UsageError
from quarry.executors import executor


def _weighted(item: int, *, panel: pl.DataFrame, weights: np.ndarray) -> dict[str, Any]:
    """A piece that reads both shared values, and says where it ran and whether its array
    is the stored one (read only) or a private copy."""
    rows = panel.filter(pl.col("k") % 3 == item % 3)
    return {
        "item": item,
        "total": float((rows["x"].to_numpy() * weights[item]).sum()),
        "pid": os.getpid(),
        "writeable": bool(weights.flags.writeable),
    }


def _refuse(item: int) -> int:
    if item == 2:
        raise UsageError(f"piece {item}: refused")
    return item


def _fail_or_finish_late(item: int, *, marks: str) -> int:
    """Piece 0 fails at once; the others finish 3 s later and leave a mark."""
    import time
    from pathlib import Path

    if item == 0:
        raise UsageError("piece 0: refused")
    time.sleep(3)
    (Path(marks) / f"{item}.done").write_text("")
    return item


def _expected(panel: pl.DataFrame, weights: np.ndarray, items: list[int]) -> list[float]:
    x, k = panel["x"].to_numpy(), panel["k"].to_numpy()
    return [float((x[k % 3 == i % 3] * weights[i]).sum()) for i in items]


@pytest.fixture
def inputs() -> tuple[pl.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    panel = pl.DataFrame({"k": np.arange(1000), "x": rng.normal(size=1000)})
    return panel, rng.normal(size=8)


def test_local_runs_in_order_in_this_process(inputs: tuple[pl.DataFrame, np.ndarray]) -> None:
    panel, weights = inputs
    seen: list[tuple[int, int]] = []
    with executor("local") as ex:
        shared = {"panel": ex.share(panel), "weights": ex.share(weights)}
        out = ex.map(
            _weighted, list(range(8)), shared=shared, done=lambda n, t: seen.append((n, t))
        )
    assert [o["total"] for o in out] == _expected(panel, weights, list(range(8)))
    assert {o["pid"] for o in out} == {os.getpid()}
    assert seen == [(n, 8) for n in range(1, 9)]


@pytest.mark.slow
def test_ray_tasks_match_local_and_read_the_store_in_place(
    ray_cluster: Any, inputs: tuple[pl.DataFrame, np.ndarray]
) -> None:
    panel, weights = inputs
    items = list(range(8))
    with executor("ray", address=ray_cluster.address) as ex:
        assert ex.workers == 2  # two nodes of one CPU
        shared = {"panel": ex.share(panel), "weights": ex.share(weights)}
        out = ex.map(_weighted, items, shared=shared, cpus=1)
        with pytest.raises(UsageError, match="piece 2: refused"):
            ex.map(_refuse, [0, 1, 2, 3])
    assert [o["item"] for o in out] == items
    assert [o["total"] for o in out] == _expected(panel, weights, items)  # bit for bit
    assert os.getpid() not in {o["pid"] for o in out}  # ran in Ray's workers
    # an array read from the object store is the stored buffer, mapped read-only
    assert not any(o["writeable"] for o in out)


@pytest.mark.slow
def test_a_failing_piece_is_raised_at_once_and_leaves_the_others_to_finish(
    ray_cluster: Any, tmp_path: Path
) -> None:
    """The error comes back as soon as one piece fails; the pieces in flight are not
    cancelled (a cancel racing a piece's end aborted the driver inside Ray), they finish and
    their results are dropped."""
    import time

    with executor("ray", address=ray_cluster.address) as ex:
        with pytest.raises(UsageError, match="piece 0: refused"):
            ex.map(_fail_or_finish_late, [0, 1, 2], shared={"marks": ex.share(str(tmp_path))})
        assert not any(tmp_path.iterdir())  # raised before the other pieces could end
        deadline = time.monotonic() + 30
        while {p.name for p in tmp_path.iterdir()} != {"1.done", "2.done"}:
            assert time.monotonic() < deadline, sorted(p.name for p in tmp_path.iterdir())
            time.sleep(0.1)


def test_unknown_executor_and_stray_address_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="--executor 'dask': choose one of local, ray"):
        executor("dask")
    with pytest.raises(UsageError, match="--ray-address goes with --executor ray"):
        executor("local", address="auto")


@pytest.mark.slow
def test_unreachable_ray_address_is_a_one_line_error() -> None:
    with pytest.raises(UsageError, match=r"--ray-address 127\.0\.0\.1:9: cannot reach"):
        executor("ray", address="127.0.0.1:9")
