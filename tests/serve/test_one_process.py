"""`quarry server start --serve-models`: the job service and the model API in one process on
one port, as a person runs it; and the plain job service, which has no /v2 routes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import httpx2
import polars as pl
import pytest

from quarry.data import Store
from quarry.features import materialize
from quarry.jobs import Client, load_manifest
from quarry.tracking import load_packaged
from tests.cli.helpers import run
from tests.serve.conftest import FEATURES, Trained, free_port

QUARRY = [sys.executable, "-m", "quarry.cli"]
DAY = date(2015, 11, 10)  # a Tuesday inside the test segment


@contextmanager
def _server(tmp_path: Path, name: str, *args: str) -> Iterator[tuple[str, Path]]:
    """``quarry server start ARGS`` in a process of its own with a fresh home, until it
    answers /healthz; its URL and log file. Stopped by SIGINT on the way out."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "QUARRY_HOME": str(tmp_path / f"{name}-home")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [*QUARRY, "server", "start", "--port", str(port), "--cpus", "1", "--memory", "1Gi",
             *args], env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx2.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url, log
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


@pytest.mark.slow
def test_one_process_serves_jobs_and_models_on_one_port(trained: Trained, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    made = subprocess.run([*QUARRY, "tokens", "create", "--user", "ann", "--project", "default",
                           "--db", db], capture_output=True, text=True, check=True)  # fmt: skip
    token = made.stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    # the reference: the day's whole cross-section computed in memory and scored in-process
    materialize(Store(trained.store), FEATURES, tmp_path / "all.parquet")
    day = pl.read_parquet(tmp_path / "all.parquet").filter(pl.col("date") == DAY)
    version = trained.versions["m-linear"]
    scores = load_packaged("m-linear", version).score(day)
    expected = dict(zip(day["instrument"], scores, strict=True))
    asked = sorted(expected)[:6]

    manifest = tmp_path / "hello.yaml"
    manifest.write_text(
        "name: hello\nproject: default\nresources: {cpus: 0.5, memory: 256Mi}\n"
        f"run: {{command: [{sys.executable!r}, -c, 'print(6 * 7)']}}\n"
    )
    with _server(tmp_path, "both", "--db", db, "--serve-models", "--models", "m-linear",
                 "--store", str(trained.store)) as (url, log):  # fmt: skip
        listed = httpx2.get(f"{url}/v2/models", headers=auth, timeout=10)
        assert listed.status_code == 200, listed.text
        assert [(m["name"], m["version"]) for m in listed.json()["models"]] == [
            ("m-linear", version)
        ]
        assert httpx2.get(f"{url}/v2/models", timeout=10).status_code == 401

        r = httpx2.post(f"{url}/v2/models/m-linear/predict", headers=auth, timeout=60,
                        json={"instruments": asked, "date": DAY.isoformat()})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.headers["X-Quarry-Model-Version"] == str(version)
        got = r.json()["predictions"]
        assert [p["instrument"] for p in got] == asked
        assert [p["score"] for p in got] == pytest.approx(
            [expected[i] for i in asked], rel=1e-9, abs=1e-12
        )

        client = Client(url, token)
        job = client.submit(load_manifest(manifest))
        deadline = time.monotonic() + 60
        while (status := client.job(job["id"])["status"]) not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert status == "succeeded", log.read_text()
        logs = httpx2.get(f"{url}/v1/jobs/{job['id']}/logs", headers=auth, timeout=10)
        assert logs.text.strip().endswith("42"), logs.text

        # /healthz is the job service's, with the alias watcher among its loops
        health = httpx2.get(f"{url}/healthz", timeout=10).json()
        assert health["status"] == "ok" and "watchdog" in health["loops"], health
        assert health["loops"]["alias watcher"]["passes"] > 0, health
        metrics = httpx2.get(f"{url}/metrics", timeout=10).text
        assert 'quarry_loop_errors_total{loop="alias watcher"} 0.0' in metrics, metrics
        # and the model API's figures beside the job service's: predictions by model, version
        assert "quarry_jobs{" in metrics, metrics
        counted = (f'quarry_serve_predict_seconds_count{{model="m-linear",version="{version}"}} '
                   "1.0")  # fmt: skip
        assert counted in metrics, metrics
        assert 'quarry_serve_model_version{alias="champion",model="m-linear"}' in metrics
    text = log.read_text()
    assert "serving under /v2" in text and "m-linear@champion=v" in text, text
    assert "server stopped by SIGINT" in text and "Traceback" not in text, text


@pytest.mark.slow
def test_the_plain_job_service_has_no_model_routes(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    with _server(tmp_path, "plain", "--db", db) as (url, _):
        assert httpx2.get(f"{url}/v2/models", timeout=10).status_code == 404
        assert httpx2.get(f"{url}/healthz", timeout=10).status_code == 200


def test_model_flags_without_serve_models_are_one_line() -> None:
    for args, flag in ((["--models", "m-linear"], "--models"), (["--store", "s"], "--store")):
        code, _, err = run("server", "start", *args)
        assert code == 1 and f"{flag}: goes with --serve-models" in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
