"""`quarry serve` as a person runs it: a model trained and registered by a workflow, then
served by a fresh process that has only the tracking store and the data store, scores a day
as the run that trained it did; and its one-line refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import numpy as np
import polars as pl
import pytest

from quarry.data import Store, generate
from quarry.jobs import JobStore
from quarry.tracking import tracking_uri
from quarry.workflows import StepCache, load_workflow, run_workflow
from tests.cli.helpers import run
from tests.serve.conftest import free_port
from tests.workflows.helpers import small_spec, write_spec

QUARRY = [sys.executable, "-m", "quarry.cli"]


@pytest.mark.slow
def test_a_fresh_process_serves_what_the_run_that_trained_the_model_scored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'tracking.db'}")
    store = tmp_path / "store"
    generate(Store(store), 60, 300, seed=5, alpha_ic=0.15)
    # a cross-sectional processor: the served day is right only if scored as a whole day
    processors = [{"name": "CSZScoreNorm"}, {"name": "Fillna"}]
    spec = small_spec(store, features={"processors": processors},
                      model={"params": {"num_boost_round": 15}})  # fmt: skip
    result = run_workflow(load_workflow(write_spec(tmp_path / "w.yaml", spec)),
                          tmp_path / "out", cache=StepCache(tmp_path / "steps"))  # fmt: skip
    assert result.results["promoted"]
    trained = pl.read_parquet(tmp_path / "out" / "predictions.parquet")
    days = trained["date"].unique().sort()
    day = days[len(days) // 2]
    expected = trained.filter(pl.col("date") == day).sort("instrument")

    # the refusals, before anything listens: one line each, no traceback
    here = ["--store", str(store), "--port", "0"]
    for args, words in (
        ([*here, "--models", "nope"], "--models nope: no registered model 'nope' (models: small)"),
        ([*here, "--models", "small@gold"], "model small has no alias 'gold' (aliases: champion)"),
        ([*here, "--memory", "lots"], "--memory lots:"),
        (["--models", "small", "--store", str(tmp_path / "none")], "no Quarry store at"),
    ):
        code, _, err = run("serve", *args)
        assert code == 1 and words in err and "Traceback" not in err, err
        assert len(err.strip().splitlines()) == 1, err

    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    with JobStore(db) as jobs:
        token = jobs.create_token("ann", "default")
    port = free_port()
    # a fresh process and home: nothing of the run (no feature cache, no step cache)
    env = {**os.environ, "QUARRY_HOME": str(tmp_path / "fresh"),
           "QUARRY_TRACKING_URI": tracking_uri()}  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [*QUARRY, "serve", "--models", "small", "--store", str(store), "--db", db,
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, log.read_text()
            try:
                if httpx2.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        r = httpx2.post(f"{url}/v2/models/small/predict/",
                        json={"instruments": expected["instrument"].to_list(),
                              "date": day.isoformat()},
                        headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.headers["X-Quarry-Model"] == "small"
        assert r.headers["X-Quarry-Model-Version"] == str(result.results["model_version"])
        got = r.json()["predictions"]
        assert [p["instrument"] for p in got] == expected["instrument"].to_list()
        np.testing.assert_allclose([p["score"] for p in got], expected["score"].to_numpy(),
                                   rtol=1e-6, atol=1e-9)  # fmt: skip
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    text = log.read_text()
    assert "serving on" in text and "small@champion=v1" in text and "stopped by SIGINT" in text
    assert "Traceback" not in text


def test_no_registered_model_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    code, _, err = run("serve", "--port", "0")
    assert code == 1 and "no model is registered" in err and "Traceback" not in err, err
    code, _, err = run("serve", "--models", "a@@b")
    assert code == 1 and "--models 'a@@b': write NAME or NAME@ALIAS" in err, err
