"""Backups' fixtures: `quarry server start` in its own process, fresh PostgreSQL databases,
and helpers to reach the bucket the backups go to."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quarry.jobs import Client
from tests.jobs.test_store import PG

QUARRY = [sys.executable, "-m", "quarry.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(predicate: Callable[[], Any], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


class QuarryServer:
    """``quarry server start`` on ``db`` with its own QUARRY_HOME, as an operator runs it."""

    def __init__(self, home: Path, db: str) -> None:
        self.home, self.db = home, db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> QuarryServer:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    *QUARRY,
                    "server",
                    "start",
                    "--port",
                    str(self.port),
                    "--db",
                    self.db,
                    "--stale-after",
                    "2",
                    "--cpus",
                    "2",
                    "--memory",
                    "2Gi",
                ],
                env={**os.environ, "QUARRY_HOME": str(self.home)},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        Client(self.url).wait_until_up(60)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=30)


def job(name: str) -> dict[str, Any]:
    """A quick job; a retry if its attempt is lost (a restored database's running attempt
    belongs to a worker that is not there)."""
    return {
        "name": name,
        "project": "alpha",
        "resources": {"cpus": 0.5, "memory": "256Mi"},
        "run": {"command": [sys.executable, "-c", "pass"]},
        "retries": {"max": 1, "backoff": 0, "on": ["lost"]},
    }


@pytest.fixture
def new_postgres() -> Iterator[Callable[[], str]]:
    """Fresh, empty databases on the machine's PostgreSQL (each call one more), dropped
    afterwards."""
    import psycopg

    made: list[str] = []

    def make() -> str:
        name = f"quarry_admin_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        made.append(name)
        return f"{PG}/{name}"

    yield make
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        for name in made:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def bucket(s3_env: dict[str, str]) -> Any:
    """The backup bucket as a pyarrow filesystem (to break backups on purpose)."""
    from pyarrow import fs

    return fs.S3FileSystem(
        access_key=s3_env["AWS_ACCESS_KEY_ID"],
        secret_key=s3_env["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        endpoint_override=s3_env["AWS_ENDPOINT_URL"].split("://")[1],
        scheme="http",
    )
