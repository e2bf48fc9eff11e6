"""Dashboard benchmark (issue 19): every page of the web dashboard with a lot of history,
10,000 tracked runs and 100,000 jobs stored; the goal is an answer within 300 ms each.

The history, seeded once into --home (bench/_data/dashboard-home by default; --reseed makes
it again, in about 3 minutes) and reused after:

- the job database: 100,000 jobs of 4 projects in every status (the newest ones queued or
  running), with their attempts (1 to 3: retries after a loss, an OOM kill or a failure),
  inserted in bulk through SQLAlchemy Core into the schema ``JobStore`` migrates to, each
  manifest the JSON ``JobStore.submit`` stores; a few jobs with their attempt's log (one of
  5 MB) and a workflow's results.json;
- the tracking store (MLflow's SQLite database and artifact folder under the home): 10,000
  runs of 4 experiments, each with the runs table's figures and 22 more metrics (the
  nightly experiment's with the promotion gate's figures and tags), 12 params and its tags.
  The first --api-runs (1,000) are logged with MLflow's client (``create_run``,
  ``log_batch``, ``set_terminated``; 70-150 ms a run on this machine, so 10,000 would take
  12-25 minutes), the rest are the same rows inserted into MLflow's own tables (its
  SQLAlchemy models) in bulk, after checking that the rows made for the first run are those
  the client wrote for it, column by column. The seeding process's SQLite connections skip
  fsync (``synchronous=OFF``), which changes nothing that is written. 3 runs have
  ``backtest/returns.parquet`` (2,520 days) and ``backtest/report.html`` (a 4.9 MB stand-in,
  a real report's size);
- the registry: 3 models of 8, 5 and 4 versions, each version with its metadata, their
  aliases moved 28 times in all (``move_alias``, which records each move);
- a dataset: ``quarry data generate --instruments 500 --days 2500``, registered with
  ``quarry datasets add``.

The measurement: ``quarry server start`` in a fresh process on a copy of the job database
(its workers cannot admit the queued jobs, which ask for more CPUs than it has, and with
``--stale-after`` of years its watchdog leaves the running ones be, so every run sees the
same history), signed in with a token of ``quarry tokens create`` (POST /login). Each page
is asked for --requests times over one keep-alive connection, as a browser does, after a
first request reported apart (the health check and coverage are measured on their first
call, then kept); each answer is checked (200 and what it must show). Reported apart too:
the time to /healthz, the first page after signing in, the first runs page (which imports
MLflow) and the 19 pages after it, the server's CPU while idle, its peak RSS (VmHWM) and
the machine's load average (this machine is shared). Figures: median, p95 and max in ms.
A live stream's status file is rewritten every second while pages are timed. Exits 1 when
a page's median is over --budget ms.

    .venv/bin/python bench/bench_dashboard.py                 # seeds on first use
    .venv/bin/python bench/bench_dashboard.py --requests 50 --json
"""

from __future__ import annotations

import argparse
import html
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
QUARRY = [sys.executable, "-m", "quarry.cli"]
USER = "bench"
PROJECTS = ("alpha", "beta", "gamma", "delta")
PROJECT_SHARE = (0.4, 0.3, 0.2, 0.1)
EXPERIMENTS = {"alpha158-lightgbm": 4000, "alpha158-mlp": 2500, "reversal-linear": 2000,
               "nightly": 1500}  # fmt: skip
OTHER_METRICS = (
    "test_icir", "test_rank_icir", "train_ic", "train_rank_ic", "train_icir",
    "valid_ic", "valid_rank_ic", "valid_icir", "valid_rank_icir", "test_long_short",
    "test_autocorrelation", "backtest_annualized_return", "backtest_information_ratio",
    "backtest_turnover", "backtest_orders_filled", "backtest_days_without_position",
    "backtest_gross_sharpe", "backtest_gross_annualized_return",
    "backtest_gross_excess_annualized_return", "backtest_gross_max_drawdown",
    "backtest_gross_information_ratio", "backtest_costs",
)  # fmt: skip
GATE_FIGURES = ("ic", "rank_ic", "sharpe", "excess_annualized_return", "max_drawdown")
MODELS = {  # name: (project, experiment its versions come from, versions)
    "alpha158-lgbm": ("alpha", "nightly", 8),
    "alpha158-mlp": ("alpha", "alpha158-mlp", 5),
    "reversal": ("beta", "reversal-linear", 4),
}
DATASET = "market"
DATASET_SIZE = (500, 2500)  # instruments, days
JOBS = 100_000
RUNS = sum(EXPERIMENTS.values())
SEED_FILE = "seeded.json"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the jobs


def _manifests() -> dict[tuple[str, str], str]:
    """A manifest per (kind, project), as ``JobStore.submit`` stores it."""
    from quarry.jobs._manifest import manifest_from_dict

    kinds = {
        "nightly-alpha": {"run": {"workflow": "examples/workflows/alpha158_lightgbm.yaml"},
                          "resources": {"cpus": 2, "memory": "4Gi"},
                          "retries": {"max": 2, "on": ["lost", "oom"]},
                          "labels": {"team": "research", "schedule": "nightly"},
                          "description": "Alpha158 + LightGBM, retrained every night"},
        "features-refresh": {"run": {"command": ["quarry", "features", "compute", "--set",
                                                 "alpha158", "--out", "features.arrow"]},
                             "resources": {"cpus": 2, "memory": "8Gi"}, "timeout": "2h",
                             "data": [{"dataset": DATASET}]},
        "walk-forward": {"run": {"workflow": "examples/workflows/walk_forward.yaml"},
                         "resources": {"cpus": 4, "memory": "16Gi"}, "priority": 5,
                         "retries": {"max": 1}, "env": {"POLARS_MAX_THREADS": "4"}},
        "backtest-sweep": {"run": {"command": ["quarry", "backtest", "--strategy",
                                               "topk-dropout", "--no-report"]},
                           "resources": {"cpus": 2, "memory": "2Gi"}},
    }  # fmt: skip
    return {
        (kind, project): manifest_from_dict({"name": kind, "project": project, **spec}).to_json()
        for kind, spec in kinds.items()
        for project in PROJECTS
    }


def _seed_jobs(home: Path, now: datetime) -> dict[str, Any]:
    """100,000 jobs and their attempts, in bulk; a few logs and results."""
    import numpy as np
    from sqlalchemy import insert

    from quarry.jobs import JobStore
    from quarry.jobs._manifest import Manifest
    from quarry.jobs._schema import Attempt, Job

    rng = np.random.default_rng(19)
    manifests = _manifests()
    kinds = sorted({k for k, _ in manifests})
    parsed = {key: Manifest.from_json(text) for key, text in manifests.items()}
    store = JobStore(f"sqlite:///{home / 'jobs.db'}")  # the migrations make the schema
    projects = rng.choice(len(PROJECTS), JOBS, p=PROJECT_SHARE)
    kind_of = rng.choice(len(kinds), JOBS, p=(0.3, 0.3, 0.3, 0.1))
    # the newest 2,100 are mostly waiting or running; older ones ended
    late = np.arange(JOBS) >= JOBS - 2100
    ended = rng.choice(["succeeded", "failed", "cancelled"], JOBS, p=(0.83, 0.12, 0.05))
    young = rng.choice(["queued", "running", "succeeded"], JOBS, p=(0.95, 0.02, 0.03))
    statuses = np.where(late, young, ended)
    jobs, attempts = [], []
    for k in range(JOBS):
        job_id = k + 1
        status = str(statuses[k])
        key = (kinds[kind_of[k]], PROJECTS[projects[k]])
        manifest = parsed[key]
        created = now - timedelta(seconds=300 * (JOBS - job_id) + float(rng.uniform(0, 60)))
        started = finished = None
        reason = None
        tries: list[tuple[str | None, str | None, int | None]] = []
        if status == "succeeded":
            tries = [("lost", "no heartbeat for 5 s: its process or worker died", None)] * int(
                rng.random() < 0.08
            ) + [("succeeded", None, 0)]
        elif status == "failed":
            n = int(rng.integers(1, 4))
            oom = rng.random() < 0.3
            last = ("oom_killed", "peak memory over its limit", 137) if oom else (
                "failed", f"exit code {int(rng.choice([1, 2, 3]))}", 1)  # fmt: skip
            tries = [("lost", "no heartbeat for 5 s: its process or worker died", None)] * (
                n - 1
            ) + [last]
            reason = last[1] if last[0] == "failed" else f"{last[0]}: {last[1]}"
        elif status == "cancelled":
            reason = "while running" if rng.random() < 0.5 else "while queued"
            if reason == "while running":
                tries = [("cancelled", "cancelled", -15)]
        elif status == "running":
            tries = [(None, None, None)]
        elif rng.random() < 0.05:  # queued again after a lost attempt
            tries = [("lost", "no heartbeat for 5 s: its process or worker died", None)]
            reason = "attempt 1 lost: no heartbeat for 5 s: its process or worker died"
        at = created + timedelta(seconds=float(rng.uniform(1, 600)))
        for number, (outcome, why, code) in enumerate(tries, start=1):
            took = timedelta(seconds=float(rng.uniform(30, 7200)))
            end = at + took if outcome is not None else None
            memory = manifest.resources.memory
            attempts.append({
                "job_id": job_id, "number": number, "worker": f"node-{number % 3}:41{k % 97:02d}:0",
                "memory": memory, "outcome": outcome, "reason": why, "exit_code": code,
                "peak_memory": int(memory * rng.uniform(0.1, 0.9)) if outcome else None,
                "pid": 10_000 + k % 50_000, "started_at": at, "heartbeat_at": end or now,
                "finished_at": end,
            })  # fmt: skip
            started = started or at
            finished = end
            at = (end or at) + timedelta(seconds=float(rng.uniform(1, 30)))
        if status in ("queued", "running"):
            finished = None
        elif status == "cancelled" and finished is None:
            finished = created + timedelta(seconds=float(rng.uniform(5, 3600)))
        jobs.append({
            "id": job_id, "name": manifest.name, "project": manifest.project,
            "owner": ("ann", "bob", "chen", "dee")[k % 4], "status": status,
            "priority": manifest.priority, "cpus": manifest.resources.cpus,
            "memory": manifest.resources.memory, "gpus": 0, "manifest": manifests[key],
            "attempts": len(tries), "max_retries": manifest.retries.max, "not_before": None,
            "created_at": created, "started_at": started, "finished_at": finished,
            "reason": reason,
        })  # fmt: skip
    with store.engine.begin() as conn:
        for start in range(0, len(jobs), 10_000):
            conn.execute(insert(Job), jobs[start : start + 10_000])
        for start in range(0, len(attempts), 10_000):
            conn.execute(insert(Attempt), attempts[start : start + 10_000])
    store.close()
    with sqlite3.connect(home / "jobs.db") as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("ANALYZE")

    def pick(status: str, tries: int = 1) -> int:
        """The newest job in ``status`` with at least ``tries`` attempts."""
        return next(j["id"] for j in reversed(jobs)
                    if j["status"] == status and j["attempts"] >= tries)  # fmt: skip

    ids = {"queued": pick("queued", 0), "oldest": 1, "running": pick("running"),
           "failed_3_attempts": pick("failed", 3), "succeeded": pick("succeeded")}  # fmt: skip
    counts: dict[str, int] = {}
    for j in jobs:
        counts[f"{j['project']}/{j['status']}"] = counts.get(f"{j['project']}/{j['status']}", 0) + 1
    logs = _seed_logs(home, jobs, attempts, ids)
    return {"jobs": len(jobs), "attempts": len(attempts), "counts": counts, "ids": ids, **logs}


def _seed_logs(
    home: Path, jobs: list[dict[str, Any]], attempts: list[dict[str, Any]], ids: dict[str, int]
) -> dict[str, Any]:
    """The latest attempt's log of a few jobs (one of 5 MB)."""
    last = {a["job_id"]: a["number"] for a in attempts}
    chosen = [ids["running"], ids["failed_3_attempts"], ids["succeeded"],
              *[j["id"] for j in jobs[-3000:-2900] if j["id"] in last][:9]]  # fmt: skip
    line = ("2026-12-01T03:14:15Z INFO quarry.workflows: step features: alpha158, 158 columns "
            "over 1,000 instruments x 2,500 days, 812,344 rows a second\n")  # fmt: skip
    for k, job_id in enumerate(chosen):
        folder = home / "job-logs" / f"job-{job_id}"
        folder.mkdir(parents=True, exist_ok=True)
        size = 5 << 20 if k == 1 else (20 << 10) * (k + 1)
        (folder / f"attempt-{last[job_id]}.log").write_text(line * (size // len(line)))
    return {"logged": chosen, "big_log": chosen[1]}


# ------------------------------------------------------------------------------ the runs


def _fast_sqlite(mlflow_client: Any) -> None:
    """The seeding process's connections to MLflow's SQLite skip fsync: what is written is
    the same, only a crash during seeding could lose it (and the seed is made again)."""
    from sqlalchemy import event

    engine = mlflow_client._tracking_client.store.engine
    event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA synchronous=OFF"))
    engine.dispose()


def _returns(rng: Any, days: int = 2520) -> Any:
    import numpy as np
    import polars as pl

    dates = pl.date_range(datetime(2016, 1, 4), datetime(2026, 12, 1), "1d", eager=True)
    dates = dates.filter(dates.dt.weekday() <= 5).head(days)
    bench = rng.normal(0.0003, 0.011, days)
    net = bench + rng.normal(0.0004, 0.006, days)
    value = 1e8 * np.cumprod(1 + net)
    return pl.DataFrame({"date": dates, "return_gross": net + 0.0002, "return_net": net,
                         "benchmark": bench, "turnover": rng.uniform(0.05, 0.4, days),
                         "value": value, "cash": value * 0.01,
                         "costs": value * 0.0002})  # fmt: skip


def _run_content(k: int, name: str, end_ms: int, home: Path) -> dict[str, Any]:
    """What run ``k`` (of experiment ``name``) holds, the same whichever way it is written."""
    import numpy as np

    rng = np.random.default_rng([7, k])
    start = end_ms - (RUNS - k) * 5_400_000  # one every 1.5 hours, the newest last
    model = {"alpha158-mlp": "mlp", "reversal-linear": "linear"}.get(name, "lightgbm")
    ic = float(rng.normal(0.03, 0.02))
    metrics = {"test_ic": ic, "test_rank_ic": ic + float(rng.normal(0, 0.005)),
               "backtest_sharpe": float(rng.normal(1.2, 0.6)),
               "backtest_excess_annualized_return": float(rng.normal(0.06, 0.05)),
               "backtest_max_drawdown": -float(rng.uniform(0.05, 0.35))}  # fmt: skip
    metrics |= {key: float(rng.normal(0.1, 0.5)) for key in OTHER_METRICS}
    tags = {"quarry.workflow": f"/srv/research/{name}.yaml", "quarry.model_type": model,
            "quarry.columns": "158"}  # fmt: skip
    if name == "nightly":
        promoted = bool(rng.random() < 0.3)
        tags |= {"quarry.gate.promoted": str(promoted).lower(),
                 "quarry.gate.reason": "beat the champion on rank_ic" if promoted
                 else "did not beat the champion on rank_ic"}  # fmt: skip
        for side in ("challenger", "champion"):
            metrics |= {f"gate_{side}_{f}": float(rng.normal(0.05, 0.3)) for f in GATE_FIGURES}
    params = {"model": model, "learning_rate": "0.05", "num_leaves": "64",
              "n_estimators": str(int(rng.integers(100, 1000))), "features": "158",
              "label": "Ref($close, -2)/Ref($close, -1) - 1", "seed": str(k),
              "segment_train": "2016-01-04:2021-12-31", "segment_valid": "2022-01-03:2023-12-29",
              "segment_test": "2024-01-02:2026-11-30", "universe": "large",
              "store": str(home / "stores" / DATASET)}  # fmt: skip
    return {
        "name": f"{name}-{k:05d}", "start": start, "logged": start + 60_000,
        "end": start + int(rng.uniform(60, 3600) * 1000),
        "status": "FAILED" if rng.random() < 0.02 else "FINISHED",
        "created_with": {"mlflow.user": "ann", "mlflow.source.type": "LOCAL",
                         "mlflow.source.name": "quarry"},
        "metrics": metrics, "params": params, "tags": tags,
    }  # fmt: skip


def _log_run(mlflow_client: Any, experiment: str, run: dict[str, Any]) -> str:
    """Log ``run`` as a workflow does, through MLflow's client; its id."""
    from mlflow.entities import Metric, Param, RunTag

    made = mlflow_client.create_run(experiment, start_time=run["start"], run_name=run["name"],
                                    tags=run["created_with"])  # fmt: skip
    run_id = str(made.info.run_id)
    mlflow_client.log_batch(
        run_id,
        metrics=[Metric(key, value, run["logged"], 0) for key, value in run["metrics"].items()],
        params=[Param(key, value) for key, value in run["params"].items()],
        tags=[RunTag(key, value) for key, value in run["tags"].items()],
    )
    mlflow_client.set_terminated(run_id, run["status"], end_time=run["end"])
    return run_id


def _run_rows(
    run: dict[str, Any], run_id: str, experiment: str, artifacts: str
) -> dict[str, list[dict[str, Any]]]:
    """The rows of MLflow's tables that ``_log_run`` writes for ``run`` (what ``create_run``,
    ``log_batch`` and ``set_terminated`` of MLflow's SQLAlchemy store insert)."""
    user = run["created_with"]["mlflow.user"]
    tags = {**run["created_with"], "mlflow.runName": run["name"], **run["tags"]}
    metrics = [{"key": key, "value": value, "timestamp": run["logged"], "step": 0,
                "is_nan": False, "run_uuid": run_id}
               for key, value in run["metrics"].items()]  # fmt: skip
    return {
        "runs": [{"run_uuid": run_id, "name": run["name"], "source_type": "UNKNOWN",
                  "source_name": "", "entry_point_name": "", "user_id": user,
                  "status": run["status"], "start_time": run["start"], "end_time": run["end"],
                  "deleted_time": None, "source_version": "", "lifecycle_stage": "active",
                  "artifact_uri": f"{artifacts}/{run_id}/artifacts",
                  "experiment_id": int(experiment)}],
        "tags": [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()],
        "params": [{"key": k, "value": v, "run_uuid": run_id} for k, v in run["params"].items()],
        "metrics": metrics,
        "latest_metrics": metrics,
    }  # fmt: skip


def _stored_rows(engine: Any, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """What MLflow's tables hold for run ``run_id``."""
    from sqlalchemy import select

    out = {}
    with engine.connect() as conn:
        for name, model in _tables().items():
            table = model.__table__
            found = conn.execute(select(table).where(table.c.run_uuid == run_id))
            out[name] = [dict(row._mapping) for row in found]
    return out


def _tables() -> dict[str, Any]:
    """MLflow's tables a run's rows go to, by name."""
    from mlflow.store.tracking.dbmodels import models

    return {"runs": models.SqlRun, "tags": models.SqlTag, "params": models.SqlParam,
            "metrics": models.SqlMetric, "latest_metrics": models.SqlLatestMetric}  # fmt: skip


def _same_rows(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> bool:
    def canon(rows: list[dict[str, Any]]) -> list[tuple[tuple[str, Any], ...]]:
        fix = {True: 1, False: 0}
        return sorted(tuple(sorted((k, fix.get(v, v) if isinstance(v, bool) else v)
                                   for k, v in row.items())) for row in rows)  # fmt: skip

    return all(canon(a[t]) == canon(b[t]) for t in a) and set(a) == set(b)


def _seed_runs(home: Path, now: datetime, api_runs: int) -> dict[str, Any]:
    """10,000 runs: the first ``api_runs`` through MLflow's client, the rest as the same rows
    inserted into MLflow's tables in bulk (checked against a run the client wrote); the
    backtest artifacts of a few."""
    import uuid

    import numpy as np
    from sqlalchemy import insert

    from quarry.tracking import client, experiment_id

    mlflow_client = client()
    _fast_sqlite(mlflow_client)
    engine = mlflow_client._tracking_client.store.engine
    ids = {name: experiment_id(name) for name in EXPERIMENTS}
    roots = {name: mlflow_client.get_experiment(i).artifact_location for name, i in ids.items()}
    order = np.repeat(np.array(list(EXPERIMENTS)), list(EXPERIMENTS.values()))
    np.random.default_rng(7).shuffle(order)
    end_ms = int(now.timestamp() * 1000)
    runs: dict[str, list[str]] = {name: [] for name in EXPERIMENTS}
    api_runs = min(api_runs, RUNS)
    began = time.perf_counter()
    for k in range(api_runs):
        name = str(order[k])
        runs[name].append(_log_run(mlflow_client, ids[name], _run_content(k, name, end_ms, home)))
        if (k + 1) % 250 == 0:
            _say(f"  {k + 1:,} runs through MLflow's client in {time.perf_counter() - began:.0f} s")
    api_seconds = time.perf_counter() - began
    if api_runs:  # the bulk rows are those the client writes, to the byte
        name = str(order[0])
        mine = _run_rows(_run_content(0, name, end_ms, home), runs[name][0], ids[name],
                         roots[name])  # fmt: skip
        if not _same_rows(mine, _stored_rows(engine, runs[name][0])):
            raise SystemExit(f"bulk rows differ from MLflow's own:\n{mine}\n"
                             f"{_stored_rows(engine, runs[name][0])}")  # fmt: skip
    tables = _tables()
    bulk_began = time.perf_counter()
    for first in range(api_runs, RUNS, 1000):
        rows: dict[str, list[dict[str, Any]]] = {table: [] for table in tables}
        for k in range(first, min(first + 1000, RUNS)):
            name = str(order[k])
            run_id = uuid.uuid4().hex
            made = _run_rows(_run_content(k, name, end_ms, home), run_id, ids[name], roots[name])
            for table, found in made.items():
                rows[table] += found
            runs[name].append(run_id)
        with engine.begin() as conn:
            for table, model in tables.items():
                conn.execute(insert(model), rows[table])
        _say(f"  {min(first + 1000, RUNS):,} runs in {time.perf_counter() - began:.0f} s")
    bulk_seconds = time.perf_counter() - bulk_began
    newest = runs[str(order[-1])][-1]
    with_returns = runs["nightly"][-3:]
    rng = np.random.default_rng(8)
    padding = "<!-- " + "plotly.js stand-in " * 260_000 + "-->"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for run_id in with_returns:
            _returns(rng).write_parquet(folder / "returns.parquet")
            (folder / "report.html").write_text(
                f"<!doctype html><html><head><title>Backtest</title></head><body>"
                f"<h1>Backtest of run {run_id}</h1>{padding}</body></html>"
            )
            for artifact in ("returns.parquet", "report.html"):
                mlflow_client.log_artifact(run_id, str(folder / artifact), "backtest")
    found = mlflow_client.search_runs(list(ids.values()), max_results=1)
    assert found and found[0].info.run_id == newest, "the newest run is not first"
    return {"runs": RUNS, "api_runs": api_runs, "api_seconds": round(api_seconds, 1),
            "api_ms_per_run": round(api_seconds / max(api_runs, 1) * 1000, 1),
            "bulk_runs": RUNS - api_runs, "bulk_seconds": round(bulk_seconds, 1),
            "with_returns": with_returns, "newest_run": newest,
            "plain_run": runs["alpha158-mlp"][len(runs["alpha158-mlp"]) // 2],
            "by_experiment": runs}  # fmt: skip


def _seed_models(home: Path, runs: dict[str, list[str]]) -> dict[str, Any]:
    """Registered models with their metadata, versions and alias moves."""
    from quarry._json import strict_json
    from quarry.tracking import client, move_alias
    from quarry.tracking._metadata import METADATA_TAG, PROJECT_TAG, encode, validate_metadata

    mlflow_client = client()
    moves = 0
    for name, (project, experiment, versions) in MODELS.items():
        mlflow_client.create_registered_model(name, tags={PROJECT_TAG: project},
                                              description=f"{name}, retrained nightly")  # fmt: skip
        champion = None
        for number in range(1, versions + 1):
            run_id = runs[experiment][-versions - 5 + number]
            run = mlflow_client.get_run(run_id)
            record = validate_metadata({
                "metadata_version": 1, "name": name, "version": number, "project": project,
                "description": f"{name}, retrained nightly", "authors": ["ann", "bob"],
                "licence": "proprietary", "model_type": run.data.tags["quarry.model_type"],
                "label": "Ref($close, -2)/Ref($close, -1) - 1",
                "features": [{"name": f"KLEN{w}", "expression": f"Mean($high - $low, {w})"}
                             for w in (5, 10, 20, 30, 60)],
                "training_window": {"start": "2016-01-04", "end": "2021-12-31"},
                "data": {"store": str(home / "stores" / DATASET), "as_of": None,
                         "universe": "large", "commits": {}},
                "workflow": {"path": f"/srv/research/{experiment}.yaml", "sha256": "0" * 64},
                "run_id": run_id, "metrics": strict_json(dict(run.data.metrics)),
            }, subject=f"model metadata of {name}")  # fmt: skip
            mlflow_client.create_model_version(name, source=f"{run.info.artifact_uri}/model",
                                               run_id=run_id,
                                               tags={METADATA_TAG: encode(record)})  # fmt: skip
            move_alias(name, "challenger", number, expected=number - 1 if number > 1 else None,
                       by="gate (bench)", reason="the newest version", run_id=run_id)  # fmt: skip
            moves += 1
            if number % 2 == 1 or number == versions:
                move_alias(name, "champion", number, expected=champion, by="ann",
                           reason="beat the champion on rank_ic")  # fmt: skip
                champion = number
                moves += 1
    return {"models": list(MODELS), "alias_moves": moves}


def _seed_results(home: Path, job_id: int, run_id: str) -> dict[str, Any]:
    """The results.json a workflow job writes, naming its MLflow run."""
    folder = home / "jobs" / str(job_id) / "out"
    folder.mkdir(parents=True, exist_ok=True)
    results = {"workflow": "nightly", "ic": 0.031, "rank_ic": 0.034, "sharpe": 1.4,
               "excess_annualized_return": 0.072, "max_drawdown": -0.11, "promoted": True,
               "mlflow_run_id": run_id, "model_version": 8}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    return {"results_job": job_id}


# --------------------------------------------------------------------------- the dataset


def _seed_dataset(home: Path, env: dict[str, str]) -> dict[str, Any]:
    """A generated market, registered as a public dataset."""
    store = home / "stores" / DATASET
    instruments, days = DATASET_SIZE
    began = time.perf_counter()
    subprocess.run([*QUARRY, "data", "generate", "--store", str(store), "--instruments",
                    str(instruments), "--days", str(days), "--seed", "1"], check=True, env=env,
                   capture_output=True)  # fmt: skip
    generated = time.perf_counter() - began
    subprocess.run([*QUARRY, "datasets", "add", DATASET, "--store", str(store), "--owner",
                    USER, "--project", "alpha", "--visibility", "public", "--description",
                    f"A generated market, {instruments:,} instruments x {days:,} days", "--db",
                    f"sqlite:///{home / 'jobs.db'}"], check=True, env=env,
                   capture_output=True)  # fmt: skip
    return {"dataset": DATASET, "generate_seconds": round(generated, 1)}


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("QUARRY_DB", "QUARRY_ARTIFACT_URI", "QUARRY_STORE")}  # fmt: skip
    return {**env, "QUARRY_HOME": str(home),
            "QUARRY_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}  # fmt: skip


def seed(home: Path, again: bool, api_runs: int) -> dict[str, Any]:
    """The history in ``home``, made on first use (or with ``again``); what was seeded."""
    done = home / SEED_FILE
    if done.exists() and not again:
        found: dict[str, Any] = json.loads(done.read_text())
        return found
    marker = home / ".bench-dashboard"  # a folder this benchmark made: safe to remove
    if home.exists() and any(home.iterdir()) and not marker.exists():
        raise SystemExit(f"--home {home}: not a folder this benchmark seeded, and not empty; "
                         "give a new or empty folder")  # fmt: skip
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    marker.touch()
    env = _env(home)
    os.environ.update({k: env[k] for k in ("QUARRY_HOME", "QUARRY_TRACKING_URI")})
    for key in ("QUARRY_DB", "QUARRY_ARTIFACT_URI"):
        os.environ.pop(key, None)
    now = datetime.now(UTC)
    out: dict[str, Any] = {"seeded_at": now.isoformat(timespec="seconds")}
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("jobs", lambda: _seed_jobs(home, now)),
        ("runs", lambda: _seed_runs(home, now, api_runs)),
        ("models", lambda: _seed_models(home, out["by_experiment"])),
        ("results", lambda: _seed_results(home, out["ids"]["succeeded"], out["with_returns"][-1])),
        ("dataset", lambda: _seed_dataset(home, env)),
    ]
    for step, make in steps:
        _say(f"seeding {step} in {home} ...")
        began = time.perf_counter()
        out |= make()
        out[f"seed_{step}_seconds"] = round(time.perf_counter() - began, 1)
        _say(f"  {step}: {out[f'seed_{step}_seconds']} s")
    out["experiments"] = {name: len(ids) for name, ids in out.pop("by_experiment").items()}
    done.write_text(json.dumps(out, indent=1))
    return out


# ------------------------------------------------------------------------ the measurement


class Browser:
    """One keep-alive connection with the session cookie."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.cookie = ""

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[float, int, dict[str, str], str]:
        """(ms, status, headers, body) of one request, timed to the last byte read. A
        connection the server closed while idle (uvicorn keeps one 5 s) is opened again, as a
        browser does, and the request timed again."""
        sent = {**(headers or {}), **({"Cookie": self.cookie} if self.cookie else {})}
        for again in (False, True):
            began = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=sent)
                response = self.conn.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionError):
                if again:
                    raise
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        ms = (time.perf_counter() - began) * 1000
        return ms, response.status, dict(response.getheaders()), data.decode("utf-8", "replace")

    def login(self, token: str) -> float:
        ms, status, headers, _ = self.request(
            "POST", "/login", body=urlencode({"token": token, "next": "/"}),
            headers={"Origin": f"http://127.0.0.1:{self.port}",
                     "Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        cookie = headers.get("set-cookie") or headers.get("Set-Cookie") or ""
        if status != 303 or not cookie.startswith("quarry_session="):
            raise SystemExit(f"sign-in failed: {status} {headers}")
        self.cookie = cookie.split(";", 1)[0]
        return ms


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _next_link(body: str) -> str | None:
    found = re.search(r'rel="next" href="([^"]+)"', body)
    return "/runs" + html.unescape(found.group(1)) if found else None


def _stream_status(home: Path, stop: threading.Event) -> None:
    """A live stream's status file, rewritten every second as ``quarry stream run`` does."""
    folder = home / "streams"
    folder.mkdir(exist_ok=True)
    bars = 0
    while not stop.is_set():
        bars += 500
        status = {"name": "bench-live", "pid": os.getpid(), "last_bar": datetime.now(UTC)
                  .isoformat(), "bars": bars, "bars_per_second": 500.0, "lag_p50_ms": 3.1,
                  "lag_p99_ms": 12.4, "model": "alpha158-lgbm", "model_version": 7,
                  "dead_letters": 0, "updated_at": datetime.now(UTC).isoformat(),
                  "stopped": False}  # fmt: skip
        (folder / "bench-live.json").write_text(json.dumps(status))
        stop.wait(1.0)
    (folder / "bench-live.json").unlink(missing_ok=True)


def _pages(
    seeded: dict[str, Any], browser: Browser, walked: list[float]
) -> list[tuple[str, str, str]]:
    """(label, path, what the answer must contain) for every page measured; ``walked``: the
    ms of each runs page while following "next page" from the first (the very first runs
    page of the server, which imports MLflow, among them)."""
    ids = seeded["ids"]
    counts = seeded["counts"]
    failed_beta = counts.get("beta/failed", 0)
    a, b = seeded["with_returns"][-2:]
    # the runs pages' tokens: page 2's, and page 21's (after following 20 "next page")
    path = "/runs"
    tokens = []
    for _ in range(20):
        ms, status, _, body = browser.request("GET", path)
        _check(path, status, body, "Runs")
        walked.append(round(ms, 1))
        following = _next_link(body)
        if following is None:
            break
        tokens.append(path := following)
    model = next(iter(MODELS))
    pages = -(-JOBS // 50)
    return [
        ("/", "/", f"{JOBS:,}</div>jobs in all"),
        ("/jobs", "/jobs", f"({JOBS:,} in all)"),
        (f"/jobs?page={pages // 2} (deep)", f"/jobs?page={pages // 2}",
         f"page {pages // 2} of {pages}"),
        (f"/jobs?page={pages} (last)", f"/jobs?page={pages}", f"page {pages} of {pages}"),
        ("/jobs?status=failed&project=beta", "/jobs?status=failed&project=beta",
         f"{failed_beta:,} in all"),
        ("/jobs/rows", "/jobs/rows", f'data-job="{JOBS}"'),
        ("/jobs/new", "/jobs/new", "Submit a job"),
        ("/jobs/{id} (queued)", f"/jobs/{ids['queued']}", "in the queue: "),
        ("/jobs/{id} (running)", f"/jobs/{ids['running']}", 'id="status">running'),
        ("/jobs/{id} (failed, 3 attempts)", f"/jobs/{ids['failed_3_attempts']}",
         "<tr><td>3</td>"),
        ("/jobs/{id} (succeeded, results)", f"/jobs/{ids['succeeded']}", 'id="run-link"'),
        ("/jobs/{id} (oldest)", f"/jobs/{ids['oldest']}", "Job 1:"),
        ("/jobs/{id}/summary (running)", f"/jobs/{ids['running']}/summary", "running"),
        ("/jobs/{id}/log (5 MB log, 256 KiB sent)", f"/jobs/{seeded['big_log']}/log", "INFO"),
        ("/runs", "/runs", f'data-run="{seeded["newest_run"]}"'),
        ("/runs?after= (page 2)", tokens[0], "data-run="),
        (f"/runs?after= (page {len(tokens) + 1})", tokens[-1], "data-run="),
        ("/runs?experiment=nightly", "/runs?experiment=nightly", "nightly-"),
        ("/runs/{id} (with returns)", f"/runs/{a}", "Cumulative return"),
        ("/runs/{id} (no artifacts)", f"/runs/{seeded['plain_run']}", "test_ic"),
        ("/runs/{id}/report (4.9 MB)", f"/runs/{a}/report", "plotly.js stand-in"),
        ("/runs/compare", f"/runs/compare?run={a}&run={b}", "Cumulative return"),
        ("/models", "/models", model),
        ("/models/{name}", f"/models/{model}", "champion"),
        ("/datasets", "/datasets", DATASET),
        ("/datasets/{name}", f"/datasets/{DATASET}", "Commits"),
        ("/datasets/{name}/health", f"/datasets/{DATASET}/health", 'id="health-status"'),
        ("/datasets/{name}/coverage", f"/datasets/{DATASET}/coverage", "<svg"),
        ("/streams", "/streams", "bench-live"),
    ]  # fmt: skip


def _check(label: str, status: int, body: str, must: str) -> None:
    if status != 200 or must not in body:
        shown = re.sub(r"\s+", " ", body)[:300]
        raise SystemExit(f"{label}: status {status}, {must!r} not in the answer: {shown}")


def _idle_cpu(pid: int, seconds: float) -> float:
    """The share of a core ``pid`` uses while no request comes (its workers and watchdog
    polling the job database), in percent."""

    def ticks() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime, stime

    before = ticks()
    time.sleep(seconds)
    return (ticks() - before) / os.sysconf("SC_CLK_TCK") / seconds * 100


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(seeded: dict[str, Any], home: Path, requests: int) -> dict[str, Any]:
    """Start a server on a copy of the job database and time every page."""
    work = Path(tempfile.mkdtemp(prefix="quarry-bench-dashboard-"))
    try:
        with sqlite3.connect(home / "jobs.db") as source, sqlite3.connect(work / "jobs.db") as copy:
            source.backup(copy)
        db = f"sqlite:///{work / 'jobs.db'}"
        env = _env(home)
        token = ""
        for project in PROJECTS:  # the viewer is a member of every project
            token = subprocess.run([*QUARRY, "tokens", "create", "--user", USER, "--project",
                                    project, "--db", db], check=True, env=env,
                                   capture_output=True, text=True).stdout.strip()  # fmt: skip
        port = _port()
        log = (work / "server.log").open("w")
        began = time.perf_counter()
        server = subprocess.Popen(
            [*QUARRY, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--db", db,
             "--cpus", "1", "--memory", "1Gi", "--stale-after", "1e9"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stop = threading.Event()
        stream = threading.Thread(target=_stream_status, args=(home, stop), daemon=True)
        try:
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"the server stopped: {(work / 'server.log').read_text()}")
                try:
                    probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    probe.request("GET", "/healthz")
                    if probe.getresponse().status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.05)
            up = time.perf_counter() - began
            browser = Browser(port)
            login_ms = browser.login(token)
            ms, status, _, body = browser.request("GET", "/")
            _check("first /", status, body, f"{JOBS:,}")
            first_page_ms = ms
            load = os.getloadavg()[0]
            stream.start()
            rows = []
            walked: list[float] = []
            for label, path, must in _pages(seeded, browser, walked):
                times = []
                first = math.nan
                for k in range(requests + 1):
                    ms, status, _, body = browser.request("GET", path)
                    _check(label, status, body, must)
                    if k == 0:
                        first = ms
                    else:
                        times.append(ms)
                row = {"page": label, "first_ms": round(first, 1),
                       "median_ms": round(statistics.median(times), 1),
                       "p95_ms": round(_percentile(times, 0.95), 1),
                       "max_ms": round(max(times), 1), "bytes": len(body.encode())}  # fmt: skip
                rows.append(row)
                _say(f"  {label}: first {row['first_ms']} ms, median {row['median_ms']} ms")
            # idle once every page has been read: the dashboard opens the tracking store in
            # a thread at its first page, seconds of CPU that are not the idle server's
            stop.set()
            idle = _idle_cpu(server.pid, 5.0)
            return {
                "server_up_s": round(up, 2),
                "login_ms": round(login_ms, 1),
                "first_page_ms": round(first_page_ms, 1),
                "runs_first_ms": walked[0],
                "runs_walk_ms": walked,
                "pages": rows,
                "server_peak_rss_mb": round(_hwm_mb(server.pid)),
                "server_idle_cpu_pct": round(idle, 1),
                "requests": requests,
                "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
            }
        finally:
            stop.set()
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            log.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _table(result: dict[str, Any], budget: float) -> str:
    lines = [f"{'page':<44} {'first':>8} {'median':>8} {'p95':>8} {'max':>8}  (ms)"]
    for r in result["pages"]:
        over = "  OVER" if r["median_ms"] > budget else ""
        lines.append(f"{r['page']:<44} {r['first_ms']:>8.1f} {r['median_ms']:>8.1f} "
                     f"{r['p95_ms']:>8.1f} {r['max_ms']:>8.1f}{over}")  # fmt: skip
    before, after = result["load_average"]
    lines.append(f"server up (to /healthz) {result['server_up_s']} s, sign-in "
                 f"{result['login_ms']} ms, first page after it {result['first_page_ms']} ms, "
                 f"first runs page {result['runs_first_ms']} ms (pages 2-20 after it: median "
                 f"{statistics.median(result['runs_walk_ms'][1:] or [math.nan]):.1f} ms), "
                 f"server peak RSS {result['server_peak_rss_mb']} MB, idle it uses "
                 f"{result['server_idle_cpu_pct']}% of a core; the machine's load average "
                 f"{before} before, {after} after")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--home", type=Path, default=HERE / "_data" / "dashboard-home",
                   help="where the seeded history is kept (made on first use)")  # fmt: skip
    p.add_argument("--reseed", action="store_true", help="seed the history again")
    p.add_argument("--api-runs", type=int, default=1000,
                   help="runs seeded through MLflow's client (the rest in bulk)")  # fmt: skip
    p.add_argument("--requests", type=int, default=20, help="timed requests a page")
    p.add_argument("--budget", type=float, default=300.0, help="ms a page's median may take")
    p.add_argument("--json", action="store_true", help="print JSON")
    args = p.parse_args()
    home = args.home.resolve()
    seeded = seed(home, args.reseed, args.api_runs)
    result = measure(seeded, home, args.requests)
    kept = (
        "jobs",
        "attempts",
        "runs",
        "api_runs",
        "api_seconds",
        "api_ms_per_run",
        "bulk_runs",
        "bulk_seconds",
        "alias_moves",
        "generate_seconds",
    )
    result["seeded"] = {k: v for k, v in seeded.items() if k.startswith("seed_") or k in kept}
    over = [r["page"] for r in result["pages"] if r["median_ms"] > args.budget]
    result["over_budget"] = over
    print(json.dumps(result, indent=1) if args.json else _table(result, args.budget))
    if over:
        _say(f"over {args.budget:g} ms (median): {', '.join(over)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
