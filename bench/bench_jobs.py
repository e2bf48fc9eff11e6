"""Job service benchmark: 1,000 no-op jobs (``true``) on SQLite and on PostgreSQL (issue 7).

Two measurements per database, each in a fresh database:

- admission throughput: 1,000 jobs queued first, then one worker (capacity for all of them)
  admits and starts them; jobs admitted per second, from the first claim to the last
  process started;
- submit-to-start latency: a worker runs while 1,000 jobs are submitted one after another
  through the store at up to ``--rate`` a second; for each job, the time from its submission
  to its attempt's process start (the attempt's recorded start), p50 and p99.

    .venv/bin/python bench/bench_jobs.py                 # both databases
    .venv/bin/python bench/bench_jobs.py --db sqlite
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

PG = "postgresql://postgres@127.0.0.1:5432"
NOOP = {"name": "noop", "project": "bench", "resources": {"cpus": 0.001, "memory": 64 << 20},
        "run": {"command": ["true"]}, "retries": {"max": 0}}  # fmt: skip


def _database(kind: str, folder: Path) -> tuple[str, Any]:
    if kind == "sqlite":
        return f"sqlite:///{folder / f'{uuid.uuid4().hex}.db'}", None
    import psycopg

    name = f"quarry_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with psycopg.connect(f"{PG}/test", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")

    return f"{PG}/{name}", drop


def _admission(kind: str, folder: Path, jobs: int) -> dict[str, Any]:
    from quarry.jobs import JobStore, Worker

    url, drop = _database(kind, folder)
    try:
        with JobStore(url) as store:
            for _ in range(jobs):
                store.submit(NOOP)
            worker = Worker(store, folder / "logs", cpus=jobs, memory=1 << 40)
            t0 = time.perf_counter()
            while store.counts().get("queued", 0):
                worker.step()
            seconds = time.perf_counter() - t0
            while worker.step():
                pass
            return {"jobs": jobs, "seconds": round(seconds, 3),
                    "admitted_per_s": round(jobs / seconds, 1)}  # fmt: skip
    finally:
        if drop:
            drop()


def _latency(kind: str, folder: Path, jobs: int, rate: float) -> dict[str, Any]:
    from quarry.jobs import JobStore, Worker

    url, drop = _database(kind, folder)
    try:
        with JobStore(url) as store:
            worker = Worker(store, folder / "logs", cpus=64, memory=1 << 40)
            stop = threading.Event()
            thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"every": 0.005})
            thread.start()
            ids = []
            t0 = time.perf_counter()
            for k in range(jobs):
                time.sleep(max(0.0, t0 + k / rate - time.perf_counter()))
                ids.append(store.submit(NOOP))
            while set(store.counts()) & {"queued", "running"}:
                time.sleep(0.05)
            assert store.counts() == {"succeeded": jobs}, store.counts()
            stop.set()
            thread.join()
            waits = []
            for job_id in ids:
                job = store.job(job_id)
                attempt = store.attempts(job_id)[0]
                assert job is not None
                waits.append((attempt.started_at - job.created_at).total_seconds() * 1000)
            waits.sort()
            return {"jobs": jobs, "rate_per_s": rate,
                    "p50_ms": round(statistics.median(waits), 1),
                    "p99_ms": round(waits[int(0.99 * (len(waits) - 1))], 1),
                    "max_ms": round(waits[-1], 1)}  # fmt: skip
    finally:
        if drop:
            drop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0, help="submissions a second (latency)")
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in kinds:
            admission = [_admission(kind, folder, args.jobs) for _ in range(args.runs)]
            latency = [_latency(kind, folder, args.jobs, args.rate) for _ in range(args.runs)]
            out[kind] = {
                "admitted_per_s_median": statistics.median(a["admitted_per_s"] for a in admission),
                "admitted_per_s_runs": [a["admitted_per_s"] for a in admission],
                "p50_ms_median": statistics.median(r["p50_ms"] for r in latency),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in latency),
                "latency_runs": latency,
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
