"""Walk-forward windows as pieces of an executor: Ray tasks on a real cluster give the local
run's predictions and metrics bit for bit, and the windows really ran in Ray's workers."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, generate, read_bars
from quarry.executors import executor
from quarry.features import DEFAULT_LABEL, compute
from quarry.models import WalkForward, train_walk_forward
from tests.models.helpers import FEATURES

# Light regularization so that 20 rounds learn something on 30 instruments (Qlib's
# lambdas keep no split here, and a constant model would make the comparison trivial).
PARAMS = {"num_boost_round": 20, "num_leaves": 8, "lambda_l1": 0.0, "lambda_l2": 1.0,
          "min_data_in_leaf": 40}  # fmt: skip


@pytest.fixture(scope="module")
def frame(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    store = Store(tmp_path_factory.mktemp("wf") / "store")
    generate(store, 30, 300, seed=3, alpha_ic=0.15)
    bars = read_bars(store, ["close", "volume"], adjust="adjusted")
    return compute(bars, FEATURES, label=DEFAULT_LABEL)


def _schedule(frame: pl.DataFrame) -> WalkForward:
    days = frame["date"].unique().sort()
    return WalkForward(start=days[200], end=days[-5], step=25, horizon=2, train_days=150,
                       valid_days=30)  # fmt: skip


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal figures, a missing (NaN) figure equal to itself."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k]))
        for k in a
    )


def test_the_local_executor_is_the_default_and_says_each_window(frame: pl.DataFrame) -> None:
    heard: list[str] = []
    schedule = _schedule(frame)
    default = train_walk_forward(frame, schedule, params=PARAMS, experiment=None)
    with executor("local") as ex:
        local = train_walk_forward(frame, schedule, params=PARAMS, experiment=None,
                                   progress=heard.append, executor=ex)  # fmt: skip
    assert_frame_equal(local.predictions, default.predictions)
    windows = len(schedule.windows(frame["date"].unique().sort().to_list()))
    assert windows == 4
    done = [m for m in heard if m.endswith(" done")]
    assert done == [f"window {n}/4 done" for n in range(1, 5)]
    assert any(m.startswith("boosting round 20/20") for m in heard)  # locally: the rounds too
    assert local.metrics["test"]["constant"] is False and local.metrics["test"]["rank_ic"] > 0
    # the thread count is decided by the caller and recorded with the model
    assert local.model.params()["num_threads"] == (os.cpu_count() or 1)


@pytest.mark.slow
def test_ray_windows_match_the_local_run_bit_for_bit(ray_cluster: Any, frame: pl.DataFrame) -> None:
    from ray.util.state import list_tasks

    schedule = _schedule(frame)
    local = train_walk_forward(frame, schedule, params=PARAMS, experiment=None)
    heard: list[str] = []
    with executor("ray", address=ray_cluster.address) as ex:
        import ray

        job = ray.get_runtime_context().get_job_id()
        remote = train_walk_forward(frame, schedule, params=PARAMS, experiment=None,
                                    progress=heard.append, executor=ex)  # fmt: skip
    assert_frame_equal(remote.predictions, local.predictions, check_exact=True)
    assert _same(remote.metrics["test"], local.metrics["test"])
    # the last window's model, back from its worker, scores as the local one does
    x = frame.select(pl.col(list(FEATURES)).cast(pl.Float32)).to_numpy()
    assert (remote.model.predict(x) == local.model.predict(x)).all()
    assert heard == [f"window {n}/4 done" for n in range(1, 5)]  # no callback crossed over
    # each window was a Ray task of this job, run in a worker process, not here
    deadline, tasks = time.monotonic() + 30, []
    while time.monotonic() < deadline:  # task events reach the dashboard within a second
        tasks = list_tasks(address=ray_cluster.dashboard, filters=[("job_id", "=", job)],
                           detail=True, raise_on_missing_output=False)  # fmt: skip
        if len([t for t in tasks if t.state == "FINISHED"]) >= 4:
            break
        time.sleep(0.5)
    finished = [t for t in tasks if t.state == "FINISHED"]
    assert len(finished) == 4
    assert os.getpid() not in {t.worker_pid for t in finished}
