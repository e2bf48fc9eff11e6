"""A worker running real processes: every way an attempt ends, retries after a kill -9 and
after an OOM, cancellation, and the watchdog ending attempts whose heartbeat stopped."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from quarry.jobs import JobStore, LocalBackend, _backends
from quarry.jobs._watchdog import Watchdog
from quarry.jobs._worker import Worker

PY = sys.executable


def _job(code: str, *, memory: int = 512 << 20, **extra: Any) -> dict[str, Any]:
    return {"name": "t", "project": "p", "resources": {"cpus": 1, "memory": memory},
            "run": {"command": [PY, "-c", code]}, **extra}  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as opened:
        yield opened


def _worker(store: JobStore, tmp_path: Path, **kw: Any) -> Worker:
    return Worker(store, tmp_path / "logs", cpus=2, memory=4 << 30, heartbeat_every=0.2, **kw)


def _until(predicate: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def test_every_ending_is_classified(store: JobStore, tmp_path: Path) -> None:
    ok = store.submit(_job("print('hello')"))
    bad = store.submit(_job("import sys; sys.exit(3)"))
    slow = store.submit(_job("import time; time.sleep(60)", timeout=0.5))
    _worker(store, tmp_path).run(until_idle=True, every=0.05)
    assert store.job(ok).status == "succeeded"  # type: ignore[union-attr]
    log = tmp_path / "logs" / f"job-{ok}" / "attempt-1.log"
    assert log.read_text().strip() == "hello"
    failed = store.attempts(bad)[0]
    assert (failed.outcome, failed.exit_code) == ("failed", 3)
    assert store.job(bad).status == "failed"  # type: ignore[union-attr]
    assert store.attempts(slow)[0].outcome == "timed_out"


def test_an_attempt_killed_with_sigkill_is_retried_and_succeeds(
    store: JobStore, tmp_path: Path
) -> None:
    marker = tmp_path / "second"
    # the first attempt waits to be killed; the second finds the marker and succeeds
    code = (f"import os, time, pathlib; m = pathlib.Path({str(marker)!r})\n"
            "if m.exists(): raise SystemExit(0)\nm.touch(); time.sleep(60)")  # fmt: skip
    job = store.submit(_job(code, retries={"max": 1, "backoff": 0, "on": ["lost"]}))
    worker = _worker(store, tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"every": 0.05})
    thread.start()
    try:
        _until(lambda: marker.exists() and store.attempts(job)[0].pid is not None)
        os.kill(store.attempts(job)[0].pid, signal.SIGKILL)  # type: ignore[arg-type]
        _until(lambda: store.job(job).status == "succeeded")  # type: ignore[union-attr]
    finally:
        stop.set()
        thread.join()
    first, second = store.attempts(job)
    assert (first.outcome, first.reason) == ("lost", "the process died of SIGKILL")
    assert second.outcome == "succeeded"


def test_a_job_over_its_memory_is_oom_killed_then_retried_with_more(
    store: JobStore, tmp_path: Path
) -> None:
    hog = "import time; b = bytearray(300 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1)"
    job = store.submit(_job(hog, memory=100 << 20, retries={
        "max": 1, "backoff": 0, "on": ["oom"], "memory_multiplier_on_oom": 5}))  # fmt: skip
    _worker(store, tmp_path).run(until_idle=True, every=0.05)
    first, second = store.attempts(job)
    assert first.outcome == "oom_killed" and first.memory == 100 << 20
    assert first.peak_memory is not None and first.peak_memory > 100 << 20
    assert second.memory == 500 << 20 and second.outcome == "succeeded"
    assert second.peak_memory is not None and second.peak_memory > 300 << 20


def test_a_cancelled_job_is_stopped(store: JobStore, tmp_path: Path) -> None:
    job = store.submit(_job("import time; time.sleep(60)"))
    worker = _worker(store, tmp_path)
    worker.step()
    assert store.job(job).status == "running"  # type: ignore[union-attr]
    store.cancel(job)
    _until(lambda: worker.step() == 0, 10)
    assert store.attempts(job)[0].outcome == "cancelled"
    assert store.job(job).status == "cancelled"  # type: ignore[union-attr]


def test_the_watchdog_ends_an_attempt_whose_worker_died(store: JobStore, tmp_path: Path) -> None:
    job = store.submit(_job("print('again')", retries={"max": 1, "backoff": 0, "on": ["lost"]}))
    store.claim("a-worker-that-dies", cpus=1, memory=1 << 30)  # and never sends a heartbeat
    watchdog = Watchdog(store, stale_after=0.3)
    assert watchdog.sweep() == []
    _until(lambda: bool(watchdog.sweep()), 5)
    assert store.job(job).status == "queued"  # type: ignore[union-attr]
    assert "no heartbeat" in (store.attempts(job)[0].reason or "")
    _worker(store, tmp_path).run(until_idle=True, every=0.05)
    assert [a.outcome for a in store.attempts(job)] == ["lost", "succeeded"]


def test_a_workflow_job_runs_quarry_run(store: JobStore, tmp_path: Path) -> None:
    """``run: {workflow: FILE}`` runs ``quarry run FILE``: a file with a typo fails the attempt
    with the CLI's one-line error in the log."""
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: w\nmodel: {typo: 1}\n")
    job = store.submit({"name": "w", "project": "p", "resources": {"cpus": 1, "memory": 1 << 30},
                        "run": {"workflow": str(flow)}})  # fmt: skip
    _worker(store, tmp_path).run(until_idle=True, every=0.05)
    attempt = store.attempts(job)[0]
    assert (attempt.outcome, attempt.exit_code) == ("failed", 1)
    log = (tmp_path / "logs" / f"job-{job}" / "attempt-1.log").read_text()
    assert "unknown key 'typo' in model" in log and "Traceback" not in log


def test_a_worker_the_watchdog_gave_up_on_stops_its_process(
    store: JobStore, tmp_path: Path
) -> None:
    """A stalled worker's attempt is ended as lost and its job queued again; when the worker
    comes back, its heartbeat learns that and it kills the process: never two at once."""
    job = store.submit(_job("import time; time.sleep(60)",
                            retries={"max": 1, "backoff": 3600, "on": ["lost"]}))  # fmt: skip
    worker = _worker(store, tmp_path)
    worker.step()
    pid = store.attempts(job)[0].pid
    assert pid is not None
    time.sleep(0.4)  # the worker stalls; no heartbeat
    assert Watchdog(store, stale_after=0.2).sweep()
    worker._beat = 0.0  # its next step sends a heartbeat
    _until(lambda: worker.step() == 0, 10)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone
    assert [a.outcome for a in store.attempts(job)] == ["lost"]
    assert store.job(job).status == "queued"  # type: ignore[union-attr]


def test_attempts_side_by_side_get_cores_of_their_own(store: JobStore, tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    jobs = [store.submit(_job("import time; time.sleep(30)")) for _ in range(2)]
    worker = _worker(store, tmp_path)
    worker.step()
    pids = [store.attempts(j)[0].pid for j in jobs]
    cores = [os.sched_getaffinity(p) for p in pids]  # type: ignore[arg-type]
    assert all(len(c) == 1 for c in cores) and cores[0] != cores[1]
    for j in jobs:
        store.cancel(j)
    _until(lambda: worker.step() == 0, 10)


def test_a_worker_shutting_down_queues_its_jobs_again(store: JobStore, tmp_path: Path) -> None:
    job = store.submit(_job("import time; time.sleep(30)"))  # no retries allowed
    worker = _worker(store, tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"every": 0.05})
    thread.start()
    _until(lambda: store.job(job).status == "running")  # type: ignore[union-attr]
    stop.set()
    thread.join()
    assert store.job(job).status == "queued"  # type: ignore[union-attr]
    assert "shut down" in (store.attempts(job)[0].reason or "")
    stored = store.job(job)
    assert stored is not None and (stored.attempts, stored.max_retries) == (1, 0)
    assert store.attempts(job)[0].outcome == "requeued"  # not a try: the job runs again
    assert worker.requeued == [job]
    again = _worker(store, tmp_path)
    again.step()
    assert store.job(job).status == "running"  # type: ignore[union-attr]
    store.cancel(job)
    _until(lambda: again.step() == 0, 10)


def test_a_job_that_ended_before_the_shutdown_keeps_its_ending(
    store: JobStore, tmp_path: Path
) -> None:
    """A shutdown between a job's exit and the next poll used to requeue it: a finished job
    ran again. Its ending is recorded instead, and a restart runs nothing."""
    marker = tmp_path / "runs.txt"
    done = store.submit(_job(f"open({str(marker)!r}, 'a').write('ran\\n')"))
    broken = store.submit(_job("raise SystemExit(3)"))
    worker = _worker(store, tmp_path)
    worker.step()
    processes = [run.handle.process for run in worker.running.values()]
    _until(lambda: all(p.poll() is not None for p in processes))  # both exited, not polled
    worker.stop_all("server stopped")
    assert store.job(done).status == "succeeded"  # type: ignore[union-attr]
    assert store.job(broken).status == "failed"  # type: ignore[union-attr]
    assert worker.requeued == []
    again = _worker(store, tmp_path)
    assert again.step() == 0  # nothing to run again
    assert marker.read_text() == "ran\n"


def test_a_death_by_a_real_time_signal_is_lost(store: JobStore, tmp_path: Path) -> None:
    job = store.submit(_job("import os, signal; os.kill(os.getpid(), signal.SIGRTMIN + 6)"))
    _worker(store, tmp_path).run(until_idle=True, every=0.05)
    attempt = store.attempts(job)[0]
    assert attempt.outcome == "lost" and (attempt.reason or "").startswith("the process died of")


class _FailingFor:
    """A real store whose ``stale`` raises, as a database that is away does, for its first
    ``n`` calls; everything else goes to the store."""

    def __init__(self, store: JobStore, n: int) -> None:
        self.store, self.n, self.failures = store, n, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def stale(self, older_than: float) -> list[int]:
        if self.failures < self.n:
            self.failures += 1
            raise OperationalError("SELECT", {}, Exception("database is locked"))
        return self.store.stale(older_than)


def test_the_watchdog_survives_a_database_that_fails_for_a_while(
    store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    job = store.submit(_job("print('again')", retries={"max": 1, "backoff": 0, "on": ["lost"]}))
    store.claim("a-worker-that-dies", cpus=1, memory=1 << 30)  # and never sends a heartbeat
    flaky = _FailingFor(store, 5)
    watchdog = Watchdog(flaky, stale_after=0.2)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=watchdog.run, args=(stop,), kwargs={"every": 0.05})
    thread.start()
    try:
        _until(lambda: store.job(job).status == "queued", 15)  # type: ignore[union-attr]
    finally:
        stop.set()
        thread.join()
    assert flaky.failures == 5
    assert "no heartbeat" in (store.attempts(job)[0].reason or "")
    assert watchdog.health.errors == 5 and watchdog.health.passes >= 1
    assert watchdog.health.last_pass is not None
    assert caplog.text.count("database is locked") == 5


def test_an_attempt_gets_only_the_declared_environment(
    store: JobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    monkeypatch.setenv("TEAM_SETTING", "on")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    # the job's own id and folder are the service's: a manifest cannot point them elsewhere
    elsewhere = str(tmp_path / "elsewhere")
    job = store.submit(_job(code, env={"MINE": "yes", "QUARRY_JOB_OUT": elsewhere}))
    runner = LocalBackend(pass_env=["PATH", "TEAM_SETTING"])
    _worker(store, tmp_path, runner=runner).run(until_idle=True, every=0.05)
    env = json.loads((tmp_path / "logs" / f"job-{job}" / "attempt-1.log").read_text())
    assert "AWS_SECRET_ACCESS_KEY" not in env
    assert (env["TEAM_SETTING"], env["MINE"], env["PATH"]) == ("on", "yes", os.environ["PATH"])
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["QUARRY_JOB_OUT"] == str(tmp_path / "jobs" / str(job) / "out")
    assert set(env) <= {"PATH", "TEAM_SETTING", "MINE", "QUARRY_JOB_OUT", "QUARRY_JOB_ID",
                        "LC_CTYPE", *_backends.THREAD_VARS}  # fmt: skip


def test_jobs_of_one_workflow_get_output_folders_of_their_own(
    store: JobStore, tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: w\nmodel: {typo: 1}\n")
    # Each attempt's Python writes down its own command line as it starts (reading /proc
    # after the launch raced the attempt's quick failure).
    site, argv = tmp_path / "site", tmp_path / "argv"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "with open(os.environ['ARGV_LOG'], 'a') as f:\n"
        "    f.write(os.environ['QUARRY_JOB_ID'] + ' ' + ' '.join(sys.argv[-2:]) + '\\n')\n"
    )
    env = {"PYTHONPATH": str(site), "ARGV_LOG": str(argv)}
    manifest = {"name": "w", "project": "p", "resources": {"cpus": 1, "memory": 1 << 30},
                "env": env, "run": {"workflow": str(flow)}}  # fmt: skip
    jobs = [store.submit(manifest) for _ in range(2)]
    worker = _worker(store, tmp_path)
    worker.run(until_idle=True, every=0.05)
    started = sorted(argv.read_text().splitlines())
    # quarry run FLOW --out OUTPUTS/<job>/out, not runs/w for both
    assert started == sorted(f"{j} --out {tmp_path / 'jobs' / str(j) / 'out'}" for j in jobs)
    assert all((tmp_path / "jobs" / str(j) / "out").is_dir() for j in jobs)


def test_an_attempt_gets_its_own_projects_variables_and_no_other_projects(
    store: JobStore, tmp_path: Path
) -> None:
    store.set_variable("alpha", "API_KEY", "alpha-secret", set_by="ops")
    store.set_variable("alpha", "ALPHA_ONLY", "1", set_by="ops")
    store.set_variable("beta", "API_KEY", "beta-secret", set_by="ops")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    a = store.submit({**_job(code, env={"MINE": "a"}), "project": "alpha"})
    b = store.submit({**_job(code), "project": "beta"})
    # queued before the project set a variable of the same name: the project's still wins
    late = store.submit({**_job(code, env={"LATE": "job's"}), "project": "alpha"})
    store.set_variable("alpha", "LATE", "project's", set_by="ops")
    runner = LocalBackend(pass_env=["PATH"])
    _worker(store, tmp_path, runner=runner).run(until_idle=True, every=0.05)

    def env_of(job: int) -> dict[str, str]:
        return dict(json.loads((tmp_path / "logs" / f"job-{job}" / "attempt-1.log").read_text()))

    env_a, env_b, env_late = env_of(a), env_of(b), env_of(late)
    assert (env_a["API_KEY"], env_a["ALPHA_ONLY"], env_a["MINE"]) == ("alpha-secret", "1", "a")
    assert env_b["API_KEY"] == "beta-secret" and "ALPHA_ONLY" not in env_b
    assert "beta-secret" not in env_a.values() and "alpha-secret" not in env_b.values()
    assert env_late["LATE"] == "project's"


def test_a_command_no_process_can_receive_fails_its_attempt_not_the_worker(
    store: JobStore, tmp_path: Path
) -> None:
    bad = store.submit(_job("print(1)") | {"run": {"command": [PY, "-c", "print(1)\0"]}})
    ok = store.submit(_job("print('after')"))
    _worker(store, tmp_path).run(until_idle=True, every=0.05)
    attempt = store.attempts(bad)[0]
    assert (attempt.outcome, attempt.reason) == ("failed", "cannot start: embedded null byte")
    assert store.job(ok).status == "succeeded"  # type: ignore[union-attr]
