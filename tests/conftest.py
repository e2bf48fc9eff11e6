"""Shared fixtures: temporary stores, vendor files, and a real S3-compatible server."""

from __future__ import annotations

import os

# The CLI's consoles take their width from COLUMNS when they are made, at import: a COLUMNS
# exported by the shell (or by pytest-xdist's workers, 80) would then wrap every command's
# output whatever width a test asks for (tests/cli/helpers.py ``run`` sets its own).
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from quarry.data import Store

# The longest test file first: under `make test`'s workers (a file to one worker), the README's
# walk-through (several minutes) then runs beside the others instead of alone after them.
_FIRST = ("tests/test_readme.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.nodeid.startswith(_FIRST))  # stable: order kept


@pytest.fixture(autouse=True)
def _private_quarry_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own QUARRY_HOME (feature cache, tracking), never the user's."""
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "quarry-home"))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


BARS_HEADER = "instrument,date,open,high,low,close,volume"


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a CSV file from text (header included) and return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text.strip() + "\n")
        return path

    return write


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) in its own process on loopback."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """AWS variables pointing at the loopback S3 server, and a fresh bucket."""
    import boto3

    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = f"quarry-{os.getpid()}-{int(time.time() * 1000) % 10**9}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield {**env, "bucket": bucket}


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A real Ray cluster on loopback for the whole session: a head and one more node, one
    CPU each (tests/ray_cluster.py). Started on first use only."""
    from tests.ray_cluster import RayCluster

    cluster = RayCluster.start(extra_nodes=1)
    yield cluster
    cluster.stop()
