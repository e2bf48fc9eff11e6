"""The Ray backend on a real cluster (the session's ``ray_cluster``: a head and a node with
one CPU each): placement by resources and labels, one run per attempt whatever submits it,
faults (an attempt's processes killed, a job over its memory), and restarts: a worker or a
whole server that stops or dies leaves its Ray jobs running, and the next adopts them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quarry.exceptions import UsageError
from quarry.jobs import Client, JobStore, Launch, RayBackend, Worker, manifest_from_dict
from quarry.jobs._backends import Ended, Handle
from quarry.jobs._ray import placement, submission_id
from quarry.jobs._server import _capacity
from quarry.jobs._watchdog import Watchdog
from quarry.jobs._worker import machine_memory

PY = sys.executable
QUARRY = [PY, "-m", "quarry.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _job(code: str, *, memory: int = 256 << 20, **extra: Any) -> dict[str, Any]:
    return {"name": "t", "project": "p", "resources": {"cpus": 0.5, "memory": memory},
            "run": {"command": [PY, "-c", code]}, **extra}  # fmt: skip


def _launch(tmp_path: Path, code: str, attempt: int, memory: int = 256 << 20,
            **extra: Any) -> Launch:  # fmt: skip
    """An attempt started by hand; its admission time makes its Ray job's id new."""
    manifest = manifest_from_dict(_job(code, memory=memory, **extra))
    return Launch(1, attempt, manifest, memory, tmp_path / f"attempt-{attempt}.log",
                  tmp_path / "out", started_at=datetime.now(UTC))  # fmt: skip


def _ray_id(attempt: Any) -> str:
    """The Ray job of a stored attempt."""
    return submission_id(Launch(attempt.job_id, attempt.id, manifest_from_dict(_job("pass")), 1,
                                Path(), Path(), started_at=attempt.started_at))  # fmt: skip


def _until(predicate: Any, seconds: float = 60.0, step: Any = None) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        if step is not None:
            step()
        time.sleep(0.05)


def _finish(backend: RayBackend, handle: Handle, seconds: float = 60.0) -> Ended:
    deadline = time.monotonic() + seconds
    while (ended := backend.poll(handle)) is None:
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)
    return ended


def _node_ids(dashboard: str) -> dict[str, str]:
    """The live nodes' ids: the head's as ``head``, the others' by their custom resource."""
    with urllib.request.urlopen(f"{dashboard}/nodes?view=summary", timeout=10) as r:  # noqa: S310
        nodes = json.load(r)["data"]["summary"]
    ids = {}
    for node in nodes:
        raylet = node["raylet"]
        if raylet.get("state") != "ALIVE":
            continue
        if raylet.get("isHeadNode"):
            ids["head"] = raylet["nodeId"]
        ids |= {name: raylet["nodeId"] for name in raylet["resourcesTotal"]
                if name.startswith("node-")}  # fmt: skip
    return ids


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as opened:
        yield opened


def _worker(store: JobStore, tmp_path: Path, runner: RayBackend, name: str) -> Worker:
    return Worker(store, tmp_path / "logs", name=name, cpus=2, memory=4 << 30, runner=runner,
                  heartbeat_every=0.2)  # fmt: skip


# -- without a cluster ------------------------------------------------------------------------


def test_labels_become_a_node_selector_custom_resources_and_metadata() -> None:
    manifest = manifest_from_dict(_job("pass", labels={
        "ray.io/node-id": "abc", "resource/node-1": "0.5", "team": "alpha"}))  # fmt: skip
    selector, resources, metadata = placement(manifest)
    assert selector == {"ray.io/node-id": "abc"}
    assert resources == {"node-1": 0.5}
    assert metadata == {"quarry.job": "t", "quarry.project": "p", "team": "alpha"}
    for bad in ("x", "-1", "0", "nan", "inf"):
        with pytest.raises(ValueError, match=rf"labels.resource/gpu-a100: '{bad}' is not a pos"):
            placement(manifest_from_dict(_job("pass", labels={"resource/gpu-a100": bad})))


def test_a_missing_or_wrong_address_is_one_line_naming_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("QUARRY_RAY_ADDRESS", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UsageError, match=r"^--ray-address: give the Ray dashboard's URL"):
        RayBackend()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # Ray's own use of it: the GCS
    with pytest.raises(UsageError, match=r"--ray-address \(from \$RAY_ADDRESS\) 10.0.0.1:6379"):
        RayBackend()
    port = _free_port()  # nothing listens there
    with pytest.raises(UsageError, match=rf"--ray-address http://127.0.0.1:{port}: cannot reach"):
        RayBackend(f"http://127.0.0.1:{port}")


def test_the_cli_refuses_an_unreachable_cluster_in_one_line(tmp_path: Path) -> None:
    port = _free_port()
    done = subprocess.run(
        [*QUARRY, "server", "start", "--backend", "ray", "--ray-address",
         f"http://127.0.0.1:{port}", "--port", str(_free_port()),
         "--db", f"sqlite:///{tmp_path / 'jobs.db'}"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "QUARRY_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: --ray-address http://127.0.0.1:{port}: cannot reach")


# -- on the cluster ---------------------------------------------------------------------------


def _in_use(dashboard: str) -> dict[str, float]:
    """The resources Ray has handed out now, as its autoscaler reports them."""
    with urllib.request.urlopen(f"{dashboard}/api/cluster_status", timeout=10) as r:  # noqa: S310
        usage = json.load(r)["data"]["clusterStatus"]["loadMetricsReport"]["usage"]
    return {name: used for name, (used, _total) in usage.items() if used}


@pytest.mark.slow
def test_labels_place_a_job_and_the_job_may_use_ray_itself(
    ray_cluster: Any, tmp_path: Path
) -> None:
    backend = RayBackend(ray_cluster.dashboard)
    ids = _node_ids(ray_cluster.dashboard)
    node = next(name for name in ids if name.startswith("node-"))
    go = tmp_path / "go"
    code = ("import os, time, ray; ray.init()\n"
            "print('node=' + ray.get_runtime_context().get_node_id(), flush=True)\n"
            f"while not os.path.exists({str(go)!r}): time.sleep(0.1)")  # fmt: skip
    by_resource = _launch(tmp_path, code, 1, memory=1 << 30,
                          labels={f"resource/{node}": "1", "team": "alpha"})  # fmt: skip
    handle = backend.start(by_resource)
    # what Ray reserved for it while it runs: its resources, its memory, the node's resource
    # (the report is refreshed every few seconds)
    reserved = {"CPU": 0.5, "memory": 1 << 30, node: 1.0}
    _until(lambda: backend.poll(handle) is None and _in_use(ray_cluster.dashboard) == reserved)
    _until(lambda: backend.poll(handle) is None and "node=" in by_resource.log.read_text())
    go.touch()
    assert _finish(backend, handle).outcome == "succeeded"
    info = backend.client.get_job_info(submission_id(by_resource))
    assert info.driver_node_id == ids[node]
    # and it reached the cluster itself: Ray's address passed the guard (every node of the
    # test cluster shares one IP, so which raylet its driver joined says nothing)
    joined = [x for x in by_resource.log.read_text().splitlines() if x.startswith("node=")]
    assert len(joined) == 1 and joined[0].removeprefix("node=") in ids.values()
    assert info.metadata["team"] == "alpha" and info.metadata["quarry.attempt"] == "1"
    by_label = _launch(tmp_path, "print('hi')", 2, labels={"ray.io/node-id": ids["head"]})
    assert _finish(backend, backend.start(by_label)).outcome == "succeeded"
    assert backend.client.get_job_info(submission_id(by_label)).driver_node_id == ids["head"]
    assert by_label.log.read_text() == "hi\n"


@pytest.mark.slow
def test_an_attempt_submitted_twice_runs_once(ray_cluster: Any, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    launch = _launch(tmp_path, f"import time; open({str(runs)!r}, 'a').write('ran\\n'); "
                     "time.sleep(1)", 1)  # fmt: skip
    backend = RayBackend(ray_cluster.dashboard)
    first = backend.start(launch)
    again = backend.start(launch)  # as after an answer that was lost: the same Ray job
    # Ray's own guarantee, which the backend builds on
    with pytest.raises(RuntimeError, match="already exists"):
        backend.client.submit_job(entrypoint="true", submission_id=submission_id(launch))
    assert [_finish(backend, h).outcome for h in (first, again)] == ["succeeded", "succeeded"]
    assert runs.read_text() == "ran\n"
    jobs = [j.submission_id for j in backend.client.list_jobs()]
    assert jobs.count(submission_id(launch)) == 1


@pytest.mark.slow
def test_a_job_ray_cannot_take_fails_at_its_start_with_the_reason(
    ray_cluster: Any, store: JobStore, tmp_path: Path
) -> None:
    not_a_number = store.submit(_job("pass", labels={"resource/node-1": "x"}))
    refused = store.submit(_job("pass", labels={"ray.io/node-id": "a b"}))
    ok = store.submit(_job("print('ok')"))
    worker = _worker(store, tmp_path, RayBackend(ray_cluster.dashboard), "w")
    worker.run(until_idle=True, every=0.05)
    first, second = store.attempts(not_a_number)[0], store.attempts(refused)[0]
    assert (first.outcome, first.reason) == ("failed", "cannot start: labels.resource/node-1: "
                                             "'x' is not a positive number of Ray's resource "
                                             "'node-1'; give e.g. '1'")  # fmt: skip
    assert second.outcome == "failed"
    assert (second.reason or "").startswith("cannot start: Ray refused the job: ValueError: "
                                            "Invalid label selector value `a b`")  # fmt: skip
    assert store.job(ok).status == "succeeded"  # type: ignore[union-attr]


class _Counting:
    """Ray's real client, counting the requests made through it."""

    def __init__(self, client: Any) -> None:
        self.client, self.calls = client, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        self.calls[name] += 1
        return getattr(self.client, name)


@pytest.mark.slow
def test_running_attempts_share_a_few_requests_to_ray(
    ray_cluster: Any, store: JobStore, tmp_path: Path
) -> None:
    backend = RayBackend(ray_cluster.dashboard, list_from=2)  # a listing from 2 attempts on
    counting = _Counting(backend.client)
    backend.client = counting
    jobs = [store.submit(_job(f"import time; time.sleep(1); print({k})")) for k in range(3)]
    worker = _worker(store, tmp_path, backend, "w")
    began, steps = time.monotonic(), 0
    while store.counts() != {"succeeded": 3}:
        assert time.monotonic() - began < 60, store.counts()
        worker.step()  # each step polls every running attempt
        steps += 1
        time.sleep(0.02)
    took = time.monotonic() - began
    assert [worker.log_path(j, 1).read_text() for j in jobs] == ["0\n", "1\n", "2\n"]
    calls = counting.calls
    assert calls["list_jobs"] >= 1  # the listing answered for all of them
    # at most one listing per refresh, and a few single questions (a new attempt's first)
    assert calls["list_jobs"] <= took / backend.refresh + 2
    assert calls["get_job_info"] <= 2 * len(jobs)
    # Fewer requests than steps: asking on every step (each polls three attempts) would
    # make at least one request a step. Not a ratio of speeds, which a loaded machine moves.
    assert calls["list_jobs"] + calls["get_job_info"] < steps


@pytest.mark.slow
def test_an_attempt_whose_processes_are_killed_is_lost_then_retried(
    ray_cluster: Any, store: JobStore, tmp_path: Path
) -> None:
    marker = tmp_path / "pid"
    code = (f"import os, time, pathlib; m = pathlib.Path({str(marker)!r})\n"
            "if m.exists(): print('second'); raise SystemExit(0)\n"
            "m.write_text(str(os.getpid())); time.sleep(60)")  # fmt: skip
    job = store.submit(_job(code, retries={"max": 1, "backoff": 0, "on": ["lost"]}))
    worker = _worker(store, tmp_path, RayBackend(ray_cluster.dashboard), "w")
    _until(lambda: marker.exists() and marker.read_text() != "", step=worker.step)
    pid = int(marker.read_text())
    guard = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert b"quarry.jobs._guard" in Path(f"/proc/{guard}/cmdline").read_bytes()
    for victim in (guard, pid):  # the entrypoint's whole tree, as a dying node's processes
        os.kill(victim, signal.SIGKILL)
    _until(lambda: store.job(job).status == "succeeded", step=worker.step)  # type: ignore[union-attr]
    first, second = store.attempts(job)
    assert (first.outcome, first.reason) == ("lost", "the process died of SIGKILL")
    assert second.outcome == "succeeded" and worker.log_path(job, 2).read_text() == "second\n"


@pytest.mark.slow
def test_each_try_is_placed_with_its_own_memory_and_held_to_it(
    ray_cluster: Any, store: JobStore, tmp_path: Path
) -> None:
    hog = "import time; b = bytearray(150 << 20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1)"
    job = store.submit(_job(hog, memory=100 << 20, retries={
        "max": 1, "backoff": 0, "on": ["oom"], "memory_multiplier_on_oom": 2}))  # fmt: skip
    backend = RayBackend(ray_cluster.dashboard)
    worker = _worker(store, tmp_path, backend, "w")
    worker.run(until_idle=True, every=0.05)
    first, second = store.attempts(job)
    assert (first.outcome, second.outcome) == ("oom_killed", "succeeded")
    assert first.peak_memory is not None and first.peak_memory > 100 << 20
    log = worker.log_path(job, 1).read_text()
    assert log == f"quarry-guard: oom_killed: {first.reason}\n"
    assert (first.reason or "").endswith("passed the limit of 100 MiB")
    # what Ray ran: the guard held each try to its own memory
    ran = [backend.client.get_job_info(_ray_id(a)).entrypoint for a in (first, second)]
    assert [f"--memory {100 << 20} " in ran[0], f"--memory {200 << 20} " in ran[1]] == [True] * 2


@pytest.mark.slow
def test_a_stopping_worker_leaves_its_jobs_on_ray_and_the_next_adopts_them(
    ray_cluster: Any, store: JobStore, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    code = (f"import time; print('started', flush=True); time.sleep(3); "
            f"open({str(runs)!r}, 'a').write('ran\\n'); print('done')")  # fmt: skip
    job = store.submit(_job(code))  # no retries: a second run could only be a double run
    first = _worker(store, tmp_path, RayBackend(ray_cluster.dashboard), "first")
    log = first.log_path(job, 1)
    _until(lambda: log.exists() and log.read_text() == "started\n", step=first.step)
    first.stop_all("shut down")
    assert (first.detached, first.requeued) == ([job], [])
    attempt = store.attempts(job)[0]
    assert attempt.outcome is None and attempt.worker == first.name
    assert first.runner.client.get_job_status(_ray_id(attempt)).value == "RUNNING"  # type: ignore[attr-defined]
    second = _worker(store, tmp_path, RayBackend(ray_cluster.dashboard), "second")
    assert second.name == f"ray@{ray_cluster.dashboard}/second"
    assert second.adopt(older_than=0, certain=True) == ([job], [])
    second.run(until_idle=True, every=0.05)
    assert [(a.outcome, a.worker) for a in store.attempts(job)] == [("succeeded", second.name)]
    assert runs.read_text() == "ran\n"
    assert log.read_text() == "started\ndone\n"  # the log went on where it was: nothing twice


@pytest.mark.slow
def test_an_attempt_that_never_reached_ray_is_queued_again_without_spending_a_retry(
    ray_cluster: Any, store: JobStore, tmp_path: Path
) -> None:
    job = store.submit(_job("print('ran')"))  # no retries
    backend = RayBackend(ray_cluster.dashboard)
    # admitted by a server that died before it submitted anything
    store.claim(f"{backend.worker_prefix}dead:1:0", cpus=1, memory=1 << 30)
    worker = _worker(store, tmp_path, backend, "next")
    assert worker.adopt(older_than=0) == ([], [])  # not sure its server is dead: left alone
    assert store.attempts(job)[0].outcome is None
    assert worker.adopt(older_than=0, certain=True) == ([], [job])
    worker.run(until_idle=True, every=0.05)
    first, second = store.attempts(job)
    assert first.outcome == "requeued" and "never reached the backend" in (first.reason or "")
    assert second.outcome == "succeeded" and worker.log_path(job, 2).read_text() == "ran\n"


@pytest.mark.slow
def test_the_watchdog_asks_ray_how_an_unwatched_attempt_ended(
    ray_cluster: Any, store: JobStore, tmp_path: Path
) -> None:
    failing = store.submit(_job("raise SystemExit(3)"))
    sleeping = store.submit(_job("import time; time.sleep(60)",
                                 retries={"max": 1, "backoff": 3600, "on": ["lost"]}))  # fmt: skip
    backend = RayBackend(ray_cluster.dashboard)
    gone = _worker(store, tmp_path, backend, "gone")
    gone.step()  # submits both, then its server dies: no step, no heartbeat again
    ray_ids = {job: _ray_id(store.attempts(job)[0]) for job in (failing, sleeping)}
    status = backend.client.get_job_status
    _until(lambda: (status(ray_ids[failing]).value, status(ray_ids[sleeping]).value)
           == ("FAILED", "RUNNING"))  # fmt: skip
    # a server's first worker, through which its watchdog sees the cluster
    watchdog = Watchdog(store, stale_after=0.3, worker=_worker(store, tmp_path, backend, "w"))
    _until(lambda: bool(watchdog.sweep()) and not store.unfinished(), 30)
    failed = store.attempts(failing)[0]  # as it ended on Ray, not a generic "lost"
    assert (failed.outcome, failed.exit_code, failed.reason) == ("failed", 3, "exit code 3")
    lost = store.attempts(sleeping)[0]
    assert lost.outcome == "lost" and "still running on Ray: stopped" in (lost.reason or "")
    assert status(ray_ids[sleeping]).value == "STOPPED"  # its retry cannot run beside it
    assert store.job(sleeping).status == "queued"  # type: ignore[union-attr]


class _ScaledToZero(RayBackend):
    """A real cluster's backend as one whose worker groups have scaled to zero would see it."""

    def capacity(self) -> tuple[float, int, int]:
        return 0.0, 0, 0


@pytest.mark.slow
def test_capacity_is_the_clusters_unless_it_has_none_then_the_flags_are_needed(
    ray_cluster: Any,
) -> None:
    cpus, memory, gpus = _capacity(RayBackend(ray_cluster.dashboard), None, None, None)
    assert (cpus, gpus) == (float(ray_cluster.alive_nodes()), 0)  # one CPU a node, no GPU
    assert 0 < memory <= ray_cluster.alive_nodes() * machine_memory()
    assert _capacity(RayBackend(ray_cluster.dashboard), 3, 1 << 30, 1) == (3, 1 << 30, 1)
    empty = _ScaledToZero(ray_cluster.dashboard)
    with pytest.raises(UsageError, match=rf"^--cpus and --memory: the Ray cluster at "
                       rf"{ray_cluster.dashboard} has no live CPUs or memory now"):  # fmt: skip
        _capacity(empty, None, None, None)
    with pytest.raises(UsageError, match=r"^--memory: the Ray cluster"):
        _capacity(empty, 8, None, None)
    assert _capacity(empty, 8, 64 << 30, None) == (8, 64 << 30, 0)


class _Server:
    """``quarry server start --backend ray`` as a person runs it, in its own process."""

    def __init__(self, tmp_path: Path, dashboard: str) -> None:
        self.db = f"sqlite:///{tmp_path / 'jobs.db'}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dashboard = dashboard
        self.env = {**os.environ, "QUARRY_HOME": str(tmp_path / "home")}
        self.log = tmp_path / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.pids: list[int] = []  # of each start

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [*QUARRY, "server", "start", "--backend", "ray", "--ray-address",
                 self.dashboard, "--port", str(self.port), "--db", self.db, "--stale-after", "2"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.pids.append(self.process.pid)
        Client(self.url).wait_until_up(60)
        # up once it has adopted what it found and its workers run: its "started" line
        _until(lambda: self.log.read_text().count("server started") == len(self.pids), 30)


@pytest.fixture
def server(ray_cluster: Any, tmp_path: Path) -> Iterator[_Server]:
    running = _Server(tmp_path, ray_cluster.dashboard)
    yield running
    if running.process is not None and running.process.poll() is None:
        running.process.send_signal(signal.SIGTERM)
        running.process.wait(timeout=60)


@pytest.mark.slow
def test_a_server_killed_or_stopped_mid_run_is_followed_by_one_that_adopts_its_jobs(
    server: _Server, ray_cluster: Any, store: JobStore, tmp_path: Path
) -> None:
    """Three jobs run through a SIGKILL of the server, a fourth through a SIGTERM as well
    (each until the test lets it go, so that a slow machine cannot end one early): every one
    runs exactly once, none is left without an owner."""
    token = store.create_token("ann", "p")
    server.start()
    cpus = ray_cluster.alive_nodes()  # one CPU each: the server's capacity by default
    assert f"1 worker of {cpus:g} cpus" in server.log.read_text()
    client = Client(server.url, token)
    files = [tmp_path / f"ran-{k}" for k in range(4)]
    after_kill, go = tmp_path / "after-kill", tmp_path / "go"

    def until(release: Path) -> str:
        return ("import os, time; print('started', flush=True)\n"
                f"while not os.path.exists({str(release)!r}): time.sleep(0.1)\n"
                "open({!r}, 'a').write('x\\n')")  # fmt: skip

    codes = [until(after_kill)] * 3 + [until(go)]
    ids = [client.submit(manifest_from_dict(_job(code.format(str(f)))))["id"]
           for code, f in zip(codes, files, strict=True)]  # fmt: skip
    logs = [tmp_path / "home" / "job-logs" / f"job-{j}" / "attempt-1.log" for j in ids]
    _until(lambda: all(p.exists() and p.read_text() == "started\n" for p in logs), 60)
    assert server.process is not None
    server.process.kill()  # SIGKILL: no shutdown at all
    server.process.wait()
    server.start()
    after_kill.touch()
    _until(lambda: store.counts() == {"succeeded": 3, "running": 1}, 60)
    text = server.log.read_text()
    assert "adopted 4 attempts still on the ray backend" in text, text
    server.process.send_signal(signal.SIGTERM)  # the fourth still runs on Ray
    assert server.process.wait(timeout=60) == 0
    assert f"left 1 attempt running on Ray (job {ids[3]}); the next server adopts them" in (
        server.log.read_text()
    )
    server.start()
    go.touch()
    _until(lambda: store.counts() == {"succeeded": 4}, 60)
    for k, (job, ran) in enumerate(zip(ids, files, strict=True)):
        attempts = store.attempts(job)  # adopted: not lost, not run again
        assert [a.outcome for a in attempts] == ["succeeded"], [a.reason for a in attempts]
        last = server.pids[2 if k == 3 else 1]  # the server that saw it end
        assert attempts[0].worker == f"ray@{ray_cluster.dashboard}/{os.uname().nodename}:{last}:0"
        assert ran.read_text() == "x\n"
    assert store.unfinished() == []
    assert logs[3].read_text() == "started\n"  # copied across three servers, once
