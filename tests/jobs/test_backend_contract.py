"""What the job service promises whatever runs its attempts: one suite, run through the real
JobStore and Worker on each execution backend, the local one (subprocesses) and Ray's (jobs on
a real cluster). Every job is a tiny ``python -c``."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quarry.jobs import Backend, JobStore, LocalBackend, RayBackend, Worker

PY = sys.executable
PASS_ENV = ["PATH", "TEAM_SETTING"]


@pytest.fixture(params=["local", pytest.param("ray", marks=pytest.mark.slow)])
def runner(request: pytest.FixtureRequest) -> Backend:
    if request.param == "local":
        return LocalBackend(pass_env=PASS_ENV)
    cluster = request.getfixturevalue("ray_cluster")
    return RayBackend(cluster.dashboard, pass_env=PASS_ENV)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as opened:
        yield opened


@pytest.fixture
def worker(store: JobStore, tmp_path: Path, runner: Backend) -> Worker:
    return Worker(store, tmp_path / "logs", cpus=2, memory=4 << 30, runner=runner,
                  heartbeat_every=0.2)  # fmt: skip


def _job(code: str, *, memory: int = 256 << 20, **extra: Any) -> dict[str, Any]:
    # half a CPU: the test cluster's two nodes have one each, and some tests run two at once
    return {"name": "t", "project": "p", "resources": {"cpus": 0.5, "memory": memory},
            "run": {"command": [PY, "-c", code]}, **extra}  # fmt: skip


def _log(worker: Worker, job: int, number: int = 1) -> str:
    return worker.log_path(job, number).read_text()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _until(worker: Worker, predicate: Any, seconds: float = 60.0) -> None:
    """Step the worker until ``predicate()`` holds."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        worker.step()
        time.sleep(0.05)


def test_a_job_succeeds_with_its_output_in_its_log(store: JobStore, worker: Worker) -> None:
    job = store.submit(_job("print('hello'); print('world')"))
    worker.run(until_idle=True, every=0.05)
    attempt = store.attempts(job)[0]
    assert (attempt.outcome, attempt.exit_code) == ("succeeded", 0)
    assert store.job(job).status == "succeeded"  # type: ignore[union-attr]
    assert _log(worker, job) == "hello\nworld\n"  # the job's output and nothing else


def test_a_job_that_exits_non_zero_fails_with_its_exit_code(
    store: JobStore, worker: Worker
) -> None:
    job = store.submit(_job("print('bad input'); raise SystemExit(3)"))
    worker.run(until_idle=True, every=0.05)
    attempt = store.attempts(job)[0]
    assert (attempt.outcome, attempt.exit_code, attempt.reason) == ("failed", 3, "exit code 3")
    stored = store.job(job)
    assert stored is not None and (stored.status, stored.reason) == ("failed", "exit code 3")
    assert _log(worker, job) == "bad input\n"


def test_a_job_over_its_memory_is_oom_killed_then_retried_with_twice_as_much(
    store: JobStore, worker: Worker
) -> None:
    # 150 MiB written for real: over the first limit (100 MiB), under the second (200 MiB)
    hog = "import time; b = bytearray(150 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1)"
    job = store.submit(_job(hog, memory=100 << 20, retries={
        "max": 1, "backoff": 0, "on": ["oom"], "memory_multiplier_on_oom": 2}))  # fmt: skip
    worker.run(until_idle=True, every=0.05)
    first, second = store.attempts(job)
    assert (first.outcome, first.memory) == ("oom_killed", 100 << 20)
    assert first.peak_memory is not None and first.peak_memory > 100 << 20
    assert (first.reason or "").endswith("passed the limit of 100 MiB")
    assert (second.outcome, second.memory) == ("succeeded", 200 << 20)
    assert second.peak_memory is not None and 150 << 20 < second.peak_memory <= 200 << 20


def test_a_job_past_its_timeout_is_stopped_as_timed_out(
    store: JobStore, worker: Worker, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    job = store.submit(_job(code, timeout=1))
    worker.run(until_idle=True, every=0.05)
    attempt = store.attempts(job)[0]
    assert attempt.outcome == "timed_out"
    assert store.job(job).status == "failed"  # type: ignore[union-attr]
    assert _gone(int(pid_file.read_text()))  # stopped, not only recorded


def test_a_running_job_is_cancelled_and_its_process_stopped(
    store: JobStore, worker: Worker, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    job = store.submit(_job(code))
    _until(worker, pid_file.exists)  # running for real
    assert store.job(job).status == "running"  # type: ignore[union-attr]
    store.cancel(job)
    _until(worker, lambda: not worker.running)
    assert store.attempts(job)[0].outcome == "cancelled"
    assert store.job(job).status == "cancelled"  # type: ignore[union-attr]
    assert _gone(int(pid_file.read_text()))


def test_a_failed_job_is_retried_per_its_policy(
    store: JobStore, worker: Worker, tmp_path: Path
) -> None:
    marker = tmp_path / "tried"
    code = (f"import pathlib; m = pathlib.Path({str(marker)!r})\n"
            "if m.exists(): print('second'); raise SystemExit(0)\n"
            "m.touch(); print('first'); raise SystemExit(2)")  # fmt: skip
    job = store.submit(_job(code, retries={"max": 2, "backoff": 0, "on": ["failed"]}))
    worker.run(until_idle=True, every=0.05)
    assert [(a.outcome, a.exit_code) for a in store.attempts(job)] == [("failed", 2),
                                                                      ("succeeded", 0)]  # fmt: skip
    assert (_log(worker, job, 1), _log(worker, job, 2)) == ("first\n", "second\n")
    assert store.job(job).status == "succeeded"  # type: ignore[union-attr]


def test_the_declared_environment_and_nothing_else_reaches_the_job(
    store: JobStore, worker: Worker, runner: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")  # the server's: not passed on
    monkeypatch.setenv("TEAM_SETTING", "on")
    store.set_variable("p", "API_KEY", "p-secret", set_by="ops")
    store.set_variable("p", "TEMPLATE", "${HOME}/x $PATH", set_by="ops")  # kept as written
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    job = store.submit(_job(code, env={"MINE": "yes", "QUARRY_JOB_OUT": "/elsewhere"}))
    worker.run(until_idle=True, every=0.05)
    env = json.loads(_log(worker, job))
    out = worker.output_dir(job)
    assert (env["API_KEY"], env["TEMPLATE"], env["MINE"]) == ("p-secret", "${HOME}/x $PATH", "yes")
    assert (env["QUARRY_JOB_ID"], env["QUARRY_JOB_OUT"]) == (str(job), str(out)) and out.is_dir()
    assert (env["TEAM_SETTING"], env["PATH"], env["OMP_NUM_THREADS"]) == ("on", os.environ["PATH"],
                                                                         "1")  # fmt: skip
    assert "AWS_SECRET_ACCESS_KEY" not in env
    declared = {"PATH", "TEAM_SETTING", "API_KEY", "TEMPLATE", "MINE", "QUARRY_JOB_ID",
                "QUARRY_JOB_OUT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS", "POLARS_MAX_THREADS", "LC_CTYPE"}  # fmt: skip
    # Ray's driver keeps what Ray itself sets for it (its address, unbuffered output): a job
    # may use Ray; nothing of the node's own environment
    ray_own = {k for k in env if k.startswith("RAY_") or k == "PYTHONUNBUFFERED"}
    assert set(env) - declared - (ray_own if runner.name == "ray" else set()) == set()
