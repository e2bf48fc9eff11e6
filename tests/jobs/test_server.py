"""The service as a person runs it: `quarry server start` in its own process, the CLI client,
and the server killed with SIGKILL mid-run and started again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quarry.jobs import Client, JobStore, load_manifest

QUARRY = [sys.executable, "-m", "quarry.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    def __init__(self, tmp_path: Path) -> None:
        self.db = f"sqlite:///{tmp_path / 'jobs.db'}"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "QUARRY_HOME": str(tmp_path / "home"),
                    "QUARRY_SERVER": self.url}  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp_path / "server.log"

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [*QUARRY, "server", "start", "--port", str(self.port), "--db", self.db,
                 "--workers", "2", "--stale-after", "2"],
                env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        Client(self.url).wait_until_up(60)

    def cli(self, *args: str) -> Any:
        done = subprocess.run([*QUARRY, *args, "--json"], env=self.env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path)
    svc.env["QUARRY_TOKEN"] = svc.cli("tokens", "create", "--user", "ann", "--project",
                                      "alpha", "--db", svc.db)["token"]  # fmt: skip
    yield svc
    if svc.process is not None and svc.process.poll() is None:
        svc.process.send_signal(signal.SIGINT)
        svc.process.wait(timeout=30)


def _manifest(
    tmp_path: Path, name: str, code: str, retries: str = "{max: 2, backoff: 0, on: [lost]}",
    extra: str = "",
) -> Path:  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nproject: alpha\nresources: {{cpus: 0.5, memory: 256Mi}}\n"
        f"run: {{command: [{sys.executable!r}, -c, {code!r}]}}\n"
        f"retries: {retries}\n{extra}"
    )
    return path


def _until(predicate: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.mark.slow
def test_the_cli_against_a_running_server(service: Service, tmp_path: Path) -> None:
    service.start()
    job = service.cli("jobs", "submit", str(_manifest(tmp_path, "hello", "print('hello')")))
    assert job["status"] in ("queued", "running", "succeeded") and isinstance(job["id"], int)
    deadline = time.monotonic() + 30
    while service.cli("jobs", "show", str(job["id"]))["status"] != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    shown = service.cli("jobs", "show", str(job["id"]))
    assert shown["attempts"][0]["outcome"] == "succeeded" and shown["resources"]["cpus"] == 0.5
    assert service.cli("jobs", "logs", str(job["id"]))["log"].strip() == "hello"
    followed = subprocess.run([*QUARRY, "jobs", "logs", str(job["id"]), "-f"], env=service.env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    assert followed.returncode == 0 and followed.stdout.strip() == "hello"
    assert service.cli("jobs", "list")["total"] == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nproject: alpha\nresources: {cpu: 1}\nrun: {command: [true]}\n")
    done = subprocess.run([*QUARRY, "jobs", "submit", str(bad)], env=service.env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "cpu" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_server_killed_mid_run_loses_and_repeats_nothing(
    service: Service, tmp_path: Path
) -> None:
    service.start()
    code = "import time; time.sleep(1.5); print('done')"
    ids = [service.cli("jobs", "submit", str(_manifest(tmp_path, f"j{k}", code)))["id"]
           for k in range(6)]  # fmt: skip
    with JobStore(service.db) as store:
        deadline = time.monotonic() + 30
        while store.counts().get("running", 0) == 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert service.process is not None
        service.process.kill()  # SIGKILL: no shutdown, attempts left "running"
        service.process.wait()
        service.start()
        deadline = time.monotonic() + 90
        while store.counts().get("succeeded", 0) < len(ids):
            assert time.monotonic() < deadline, store.counts()
            time.sleep(0.2)
        assert store.counts() == {"succeeded": len(ids)}
        for job_id in ids:
            outcomes = [a.outcome for a in store.attempts(job_id)]
            assert outcomes.count("succeeded") == 1  # exactly once
            assert set(outcomes) <= {"succeeded", "lost"}  # a killed attempt is lost
        assert any(len(store.attempts(i)) == 2 for i in ids)  # some were interrupted


@pytest.mark.slow
def test_sigterm_then_restart_runs_every_job_once_without_spending_a_retry(
    service: Service, tmp_path: Path
) -> None:
    service.start()
    code = "import time; time.sleep(5); print('done')"
    client = Client(service.url, service.env["QUARRY_TOKEN"])
    ids = [client.submit(load_manifest(_manifest(tmp_path, f"j{k}", code, "{max: 0}")))["id"]
           for k in range(5)]  # fmt: skip  # no retries allowed at all
    with JobStore(service.db) as store:
        _until(lambda: store.counts().get("running", 0) == 4)  # 2 workers of 1 cpu, 0.5 each
        assert service.process is not None
        service.process.send_signal(signal.SIGTERM)
        assert service.process.wait(timeout=30) == 0
        log = service.log.read_text()
        assert "requeued 4 running attempts" in log, log
        assert store.counts() == {"queued": 5}  # nothing failed, nothing left "running"
        service.start()
        _until(lambda: store.counts().get("succeeded", 0) == 5, 60)
        assert store.counts() == {"succeeded": 5}
        interrupted = 0
        for job_id in ids:
            attempts = store.attempts(job_id)
            outcomes = [a.outcome for a in attempts]
            assert outcomes.count("succeeded") == 1 and outcomes[-1] == "succeeded"
            assert set(outcomes) <= {"succeeded", "requeued"}
            interrupted += outcomes.count("requeued")
            assert all("server stopped" in (a.reason or "") for a in attempts[:-1])
        assert interrupted == 4


@pytest.mark.slow
def test_an_attempt_sees_no_variable_the_server_was_not_told_to_pass(
    service: Service, tmp_path: Path
) -> None:
    secrets = {"AWS_SECRET_ACCESS_KEY": "hunter2", "DATABASE_URL": "postgresql://u:pw@db/x"}
    service.env.update(secrets)  # a made-up secret: the test is that it does not reach the job
    service.start()
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    job = service.cli("jobs", "submit", str(_manifest(tmp_path, "env", code, "{max: 0}",
                                                      "env: {MINE: 'yes'}\n")))  # fmt: skip
    _until(lambda: service.cli("jobs", "show", str(job["id"]))["status"] == "succeeded")
    env = json.loads(service.cli("jobs", "logs", str(job["id"]))["log"])
    assert "AWS_SECRET_ACCESS_KEY" not in env and "DATABASE_URL" not in env
    assert env["MINE"] == "yes" and env["QUARRY_HOME"] == service.env["QUARRY_HOME"]
    assert env["PATH"] == service.env["PATH"]


@pytest.mark.slow
def test_a_second_server_on_the_same_sqlite_database_is_refused(service: Service) -> None:
    service.start()
    second = subprocess.run(
        [*QUARRY, "server", "start", "--port", str(_free_port()), "--db", service.db],
        env=service.env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "another quarry server" in lines[0], second.stderr
    assert f"pid {service.process.pid}" in lines[0]  # type: ignore[union-attr]
