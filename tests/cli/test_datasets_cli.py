"""The data service as a user meets it: ``quarry datasets``, ``quarry server start`` serving
the datasets beside the jobs, a job reading through it with its own token (and one that did
not declare the dataset refused), ``quarry data warm`` and the cache's figures on /metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, generate, read_bars
from quarry.jobs import Client
from tests.cli.helpers import run

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    monkeypatch.setenv("QUARRY_HOME", str(home))
    store = tmp_path / "store"
    generate(Store(store), instruments=6, days=80, seed=3)
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    code, out, err = run(
        "datasets",
        "add",
        "market",
        "--store",
        str(store),
        "--owner",
        "ann",
        "--project",
        "alpha",
        "--visibility",
        "project",
        "--db",
        db,
    )
    assert code == 0, err
    assert out.strip() == f"dataset market (project, project alpha, owner ann) at {store}"
    code, out, _ = run("datasets", "list", "--db", db, "--json")
    assert [(d["name"], d["visibility"]) for d in json.loads(out)] == [("market", "project")]
    assert json.loads(out)[0]["location"] == str(store.resolve())
    code, _, err = run("datasets", "add", "other", "--store", str(store), "--owner", "ann",
                       "--project", "alpha", "--db", db)  # fmt: skip
    assert code == 0, err
    code, token, _ = run("tokens", "create", "--user", "ann", "--project", "alpha", "--db", db)
    port = _port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quarry.cli",
            "server",
            "start",
            "--port",
            str(port),
            "--db",
            db,
            "--cpus",
            "2",
            "--memory",
            "4Gi",
            "--flight-port",
            str(_port()),
        ],
        env={**os.environ, "QUARRY_HOME": str(home)},
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        Client(url, token.strip()).wait_until_up(60)
        yield {"url": url, "token": token.strip(), "store": str(store), "db": db}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def _job(client: Client, name: str, script: str, data: list[dict[str, str]]) -> dict[str, object]:
    job = client.submit(
        {
            "name": name,
            "project": "alpha",
            "data": data,
            "resources": {"cpus": 1, "memory": "1Gi"},
            "run": {"command": ["sh", "-c", script]},
        }
    )
    deadline = time.monotonic() + 120
    while (shown := client.job(int(job["id"])))["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, shown
        time.sleep(0.3)
    return shown


def test_a_job_reads_through_the_service_with_its_own_token(server: dict[str, str]) -> None:
    client = Client(server["url"], server["token"])
    read = (
        f"{sys.executable} -m quarry.cli data read --store quarry+{server['url']}/market "
        "--fields close --as-of 2015-03-01 --out $QUARRY_JOB_OUT/bars.parquet"
    )
    done = _job(client, "reader", read, [{"dataset": "market", "mode": "ro"}])
    assert done["status"] == "succeeded", client.logs(int(done["id"]))  # type: ignore[call-overload]
    out = Path(str(client.job(int(done["id"]))["output"])) / "bars.parquet"  # type: ignore[call-overload]
    expected = read_bars(Store(server["store"]), ["close"], as_of="2015-03-01")
    assert_frame_equal(pl.read_parquet(out), expected)
    # the same command in a job that declared another dataset: it has a token, for that one
    undeclared = _job(client, "sneaky", read, [{"dataset": "other", "mode": "ro"}])
    assert undeclared["status"] == "failed"
    log = client.logs(int(undeclared["id"]))  # type: ignore[call-overload]
    assert "403 job" in log and "did not declare dataset 'market'" in log
    os.environ["QUARRY_TOKEN"] = server["token"]
    try:
        code, out, err = run("datasets", "audit", "market", "--server", server["url"], "--json")
    finally:
        del os.environ["QUARRY_TOKEN"]
    assert code == 0, err
    reads = json.loads(out)
    assert {(r["user"], r["job_id"]) for r in reads} == {("ann", done["id"])}
    assert reads[-1]["route"] == "files" and {r["route"] for r in reads[:-1]} == {"file"}


def test_warm_fills_the_cache_and_metrics_count_it(
    server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_TOKEN", server["token"])
    args = ("data", "warm", "market", "--server", server["url"], "--fields", "close,volume")
    code, out, err = run(*args, "--json")
    assert code == 0, err
    first = json.loads(out)
    expected = read_bars(Store(server["store"]), ["close", "volume"])
    assert first["rows"] == expected.height and first["fetched_bytes"] > 0
    assert first["already_cached"] is False
    code, out, err = run(*args)
    assert code == 0, err
    assert "already cached at the current commit" in out
    with urllib.request.urlopen(server["url"] + "/metrics", timeout=30) as r:  # noqa: S310
        metrics = r.read().decode()
    assert 'quarry_read_cache_total{result="hit"} 1.0' in metrics
    assert 'quarry_read_cache_total{result="miss"} 1.0' in metrics
    assert 'quarry_data_reads_total{dataset="market",route="bars"} 1.0' in metrics
    code, _, err = run("data", "warm", "nope", "--server", server["url"])
    assert code == 1 and "no dataset 'nope'" in err and len(err.strip().splitlines()) == 1


def test_the_data_service_alone(tmp_path: Path, server: dict[str, str]) -> None:
    port = _port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "quarry.cli",
            "server",
            "start",
            "--only",
            "data",
            "--port",
            str(port),
            "--db",
            server["db"],
        ],
        env={**os.environ, "QUARRY_HOME": str(tmp_path / "h2")},
        stderr=subprocess.DEVNULL,
    )
    try:
        from quarry.data import connect

        deadline = time.monotonic() + 60
        while True:
            try:
                names = [
                    d["name"]
                    for d in connect(f"http://127.0.0.1:{port}", server["token"]).datasets()
                ]
                break
            except Exception:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.3)
        assert names == ["market", "other"]
        jobs_api = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/jobs",
            headers={"Authorization": f"Bearer {server['token']}"},
        )
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(jobs_api, timeout=10)  # noqa: S310
        missing.value.close()
        assert missing.value.code == 404  # no job API in a data-only server
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_mistakes_are_one_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    code, _, err = run(
        "datasets",
        "add",
        "x",
        "--store",
        str(tmp_path / "none"),
        "--owner",
        "a",
        "--project",
        "p",
        "--db",
        db,
    )
    assert code == 1 and "no Quarry store at" in err
    code, _, err = run("server", "start", "--only", "models")
    assert code == 1 and "--only 'models': the part that runs alone is data" in err
    code, _, err = run("datasets", "remove", "x", "--db", db)
    assert code == 1 and "no dataset 'x'" in err
