"""Ray benchmark (issue 14): a walk-forward workflow with 8 windows, local against Ray.

On this 2-core machine, with a real Ray cluster on loopback (a head and one more node, one
CPU each: two workers), every model on one thread on both sides:

1. **The whole command**, each run a fresh process: ``quarry run WF --force`` with
   ``--executor local`` (windows one after another) and with ``--executor ray
   --ray-address ADDR`` (windows as Ray tasks). The train step's own time (from the run's
   step lines) is reported beside it.
2. **The panel in the object store against reloading it**, in-process: the 8 windows
   trained as Ray tasks (workers already started) that receive the features panel from the
   object store (put once), against tasks that each read it again from its Parquet file; and
   the same 8 windows one after another in this process, the parallel part's speed-up alone.
   Time, and the peak memory of the whole machine above its idle level (``MemTotal -
   MemAvailable``, sampled every 20 ms), since Ray's workers are other processes.
3. **Ray's overhead per task**: 400 empty tasks, and 400 that each receive a 100 MB array
   from the object store, against the same calls in-process.

    .venv/bin/python bench/bench_ray.py --runs 3
    .venv/bin/python bench/bench_ray.py --runs 1 --instruments 100 --days 1200   # quicker
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.ray_cluster: the same loopback cluster as the tests
sys.path.insert(0, str(ROOT / "bench"))

from _common import generated_store, market_parser  # noqa: E402

WINDOWS = 8
STEP = 60
PARAMS = {"num_threads": 1}  # one thread per model on both sides


def _workflow(store: Path, calendar: list[date], folder: Path) -> Path:
    """A walk-forward workflow on Alpha158 whose test period holds exactly 8 windows."""
    start = calendar[-WINDOWS * STEP]
    text = f"""
name: bench_ray
data:
  store: {store}
features:
  set: alpha158
label: Ref($close, -2)/Ref($close, -1) - 1
model:
  type: lightgbm
  seed: 0
  params: {json.dumps(PARAMS)}
walk_forward:
  start: {start}
  end: {calendar[-1]}
  step: {STEP}
  train_days: 500
  valid_days: 100
backtest:
  strategy: topk-dropout
  topk: 30
  n_drop: 3
"""
    path = folder / "bench_ray.yaml"
    path.write_text(text)
    return path


def _machine_used() -> int:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        info[key] = int(value.split()[0]) * 1024
    return info["MemTotal"] - info["MemAvailable"]


@contextmanager
def _machine_peak() -> Iterator[dict[str, int]]:
    """The machine's peak used memory above its level at the start, in ``["peak"]``."""
    base, peak, stop = _machine_used(), [0], threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _machine_used() - base)

    thread = threading.Thread(target=sample, daemon=True)
    out: dict[str, int] = {}
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak"] = peak[0]


def _command(workflow: Path, out: Path, home: Path, *extra: str) -> tuple[float, float]:
    """Whole-process seconds of ``quarry run``, and its train step's own seconds."""
    env = {"QUARRY_HOME": str(home), "PATH": str(Path(sys.executable).parent),
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "quarry.cli", "run", str(workflow), "--out", str(out),
         "--force", *extra],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"quarry run failed:\n{done.stderr[-3000:]}")
    step = re.search(r"train: ran in ([0-9.]+) s", done.stderr)
    return seconds, float(step.group(1)) if step else float("nan")


def _window_from_store(window: Any, *, path: str, horizon: int) -> Any:
    """A task that reloads the panel itself, as a task without the object store would."""
    import polars as pl

    return _window(window, panel=pl.read_parquet(path), horizon=horizon)


def _window_shared(window: Any, *, panel: Any, horizon: int) -> Any:
    return _window(window, panel=panel, horizon=horizon)


def _window(window: Any, *, panel: Any, horizon: int) -> Any:
    from quarry.models import train

    result = train(panel, window.segments(), params=PARAMS, horizon=horizon, seed=0,
                   experiment=None)  # fmt: skip
    return result.predictions.height


def _warm(item: int) -> int:
    import quarry.models  # noqa: F401 - the import is the warm-up

    return item


def _noop(item: int) -> int:
    return item


def _touch(item: int, *, array: Any) -> float:
    return float(array[item])


def _timed(fn: Callable[[], Any], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = market_parser(__doc__, instruments=300, days=1500)
    parser.add_argument("--skip-command", action="store_true",
                        help="Measure only the in-process parts (2 and 3).")  # fmt: skip
    args = parser.parse_args()
    import numpy as np
    import polars as pl
    from tests.ray_cluster import RayCluster

    from quarry.data import Store
    from quarry.executors import executor
    from quarry.features import FEATURE_SETS, materialize
    from quarry.models import WalkForward

    store = generated_store("ray", args.instruments, args.days, alpha_ic=0.05)
    results: dict[str, Any] = {"instruments": args.instruments, "days": args.days,
                               "windows": WINDOWS, "runs": args.runs}  # fmt: skip
    cluster = RayCluster.start(extra_nodes=1, object_store=4 << 30)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            folder = Path(tmp)
            features = folder / "features.parquet"
            label = "Ref($close, -2)/Ref($close, -1) - 1"
            materialize(Store(store), FEATURE_SETS["alpha158"](), features, label=label)
            panel = pl.read_parquet(features)
            calendar = panel["date"].unique().sort().to_list()
            workflow = _workflow(store, calendar, folder)

            # 1. the whole command, fresh processes, alternating sides
            if not args.skip_command:
                sides: dict[str, list[tuple[float, float]]] = {"local": [], "ray": []}
                for k in range(args.runs):
                    for side, extra in (("local", ()), ("ray", ("--executor", "ray",
                                        "--ray-address", cluster.address))):  # fmt: skip
                        home = folder / f"home-{side}-{k}"
                        sides[side].append(_command(workflow, folder / f"out-{side}", home, *extra))
                        print(f"{side} run {k + 1}: {sides[side][-1]}", file=sys.stderr)
                for side, runs in sides.items():
                    results[f"command_{side}_s"] = statistics.median(r[0] for r in runs)
                    results[f"train_step_{side}_s"] = statistics.median(r[1] for r in runs)
                    results[f"command_{side}_runs"] = [round(r[0], 2) for r in runs]
                results["speedup_command"] = results["command_local_s"] / results["command_ray_s"]
                results["speedup_train_step"] = (
                    results["train_step_local_s"] / results["train_step_ray_s"]
                )

            # 2. the panel from the object store against reloading it in every task
            schedule = WalkForward(start=calendar[-WINDOWS * STEP], end=calendar[-1], step=STEP,
                                   horizon=2, train_days=500, valid_days=100)  # fmt: skip
            windows = schedule.windows(calendar)
            assert len(windows) == WINDOWS
            # the same 8 windows in this process, one after another: the parallel part alone
            local_ex = executor("local")
            times = _timed(lambda: local_ex.map(partial(_window_shared, horizon=2), windows,
                                                shared={"panel": local_ex.share(panel)}),
                           args.runs)  # fmt: skip
            results["windows_local_in_process_s"] = statistics.median(times)
            with executor("ray", address=cluster.address) as ex:
                # Ray's workers start and import Quarry and LightGBM once, before any timing
                ex.map(_warm, range(4), cpus=1)
                for name, run in (
                    ("object_store", lambda: ex.map(
                        partial(_window_shared, horizon=2), windows,
                        shared={"panel": ex.share(panel)})),
                    ("reload_each_task", lambda: ex.map(
                        partial(_window_from_store, path=str(features), horizon=2), windows)),
                ):  # fmt: skip
                    times, peaks = [], []
                    for _ in range(args.runs):
                        with _machine_peak() as peak:
                            times += _timed(run, 1)
                        peaks.append(peak["peak"])
                    results[f"panel_{name}_s"] = statistics.median(times)
                    results[f"panel_{name}_peak_mb"] = statistics.median(peaks) / 2**20

                results["speedup_windows_in_process"] = (
                    results["windows_local_in_process_s"] / results["panel_object_store_s"]
                )

                # 3. Ray's overhead per task
                n = 400
                array = np.ones(100 * 2**20 // 8)
                local = executor("local")
                shared = ex.share(array)
                for name, ray_call, local_call in (
                    ("empty", lambda: ex.map(_noop, range(n), cpus=0.5),
                     lambda: local.map(_noop, range(n))),
                    ("shared_100mb", lambda: ex.map(_touch, range(n), shared={"array": shared},
                                                    cpus=0.5),
                     lambda: local.map(_touch, range(n), shared={"array": local.share(array)})),
                ):  # fmt: skip
                    ray_s = statistics.median(_timed(ray_call, args.runs))
                    local_s = statistics.median(_timed(local_call, args.runs))
                    results[f"per_task_{name}_ms"] = (ray_s - local_s) / n * 1000
            results["ray_version"] = __import__("ray").__version__
    finally:
        cluster.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
