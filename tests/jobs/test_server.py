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

from quarry.cli._jobs import wait_for
from quarry.jobs import JobStore

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
        wait_for(self.url, 60)

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


def _manifest(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"name: {name}\nproject: alpha\nresources: {{cpus: 0.5, memory: 256Mi}}\n"
        f"run: {{command: [{sys.executable!r}, -c, {code!r}]}}\n"
        "retries: {max: 2, backoff: 0, on: [lost]}\n"
    )
    return path


@pytest.mark.slow
def test_the_cli_against_a_running_server(service: Service, tmp_path: Path) -> None:
    service.start()
    job = service.cli("jobs", "submit", str(_manifest(tmp_path, "hello", "print('hello')")))
    assert job["status"] == "queued" and isinstance(job["id"], int)
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
