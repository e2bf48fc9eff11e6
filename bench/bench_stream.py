"""Live stream benchmark (issue 17): ``quarry stream run`` in a fresh process, fed snapshots of
minute bars through NATS JetStream and through Redis Streams at a fixed rate.

The model: LightGBM (20 rounds) on Alpha158 with Fillna, trained on a generated daily market
(300 instruments x 300 days) and registered at its champion in a fresh tracking store (not
timed). The bars: ``quarry.data._minute_bars`` for --instruments instruments (every one in
every snapshot), encoded beforehand as Arrow IPC snapshots, so that the publisher's cost is
the broker's.

For each broker and each --rates rate: the stream is started (``quarry stream run --config``,
its own process, as a user starts it, told how many instruments to make room for) and, once
it has subscribed, snapshots are published at that rate for --seconds seconds, each stamped
with its publication time. Then the stream gets --drain seconds more to finish, and is
stopped (SIGTERM), printing its health as JSON:

- sustained: every snapshot processed by the end of the drain, with the lag bounded (p99
  under 1 s);
- end-to-end latency p50/p99: from a snapshot's publication to its positions' publication
  (the stream's own measure: the publisher's stamp against its clock, one machine);
- feature update per bar p50/p99 (in-process figure, the stream's own timer);
- CPU seconds and peak RSS of the stream's process (``wait4``).

    .venv/bin/python bench/bench_stream.py
    .venv/bin/python bench/bench_stream.py --instruments 1000 --seconds 20 --brokers redis
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import generated_store  # the bench folder is on sys.path

HERE = Path(__file__).resolve().parent
VENV = Path(sys.executable).parent
URLS = {"nats": "nats://127.0.0.1:4222", "redis": "redis://127.0.0.1:6379/0"}
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"


def register_model(root: Path) -> str:
    """A LightGBM model on Alpha158 at its champion in a fresh tracking store; its URI."""
    import polars as pl

    from quarry.data import Store
    from quarry.features import Fillna, Pipeline, alpha158, materialize
    from quarry.models import Recipe, Segments, train
    from quarry.tracking import register, set_alias

    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["QUARRY_TRACKING_URI"] = uri
    os.environ["QUARRY_HOME"] = str(root / "home")
    store = generated_store("serve", 300, 300)
    features = alpha158()
    materialize(Store(store), features, root / "features.parquet", label=LABEL)
    frame = pl.read_parquet(root / "features.parquet")
    days = frame["date"].unique().sort()
    cut = days[int(len(days) * 0.7)]
    steps = Pipeline([Fillna()])
    segments = Segments.parse(
        {
            "train": f"{days[0]}:{cut}",
            "valid": f"{days[int(len(days) * 0.72)]}:{days[int(len(days) * 0.85)]}",
            "test": f"{days[int(len(days) * 0.87)]}:{days[-5]}",
        }
    )
    result = train(steps.fit_transform(frame), segments, model="lightgbm",
                   params={"num_boost_round": 20}, experiment="bench-stream",
                   recipe=Recipe(features, LABEL, steps))  # fmt: skip
    assert result.run_id is not None
    meta = {
        "project": "default", "description": "bench", "authors": ["bench"],
        "licence": "proprietary", "model_type": "lightgbm", "label": LABEL,
        "features": [{"name": n, "expression": e} for n, e in features.items()],
        "training_window": {"start": str(days[0]), "end": str(cut)},
        "data": {"store": str(store), "as_of": None, "universe": None, "commits": {}},
        "workflow": {"path": "bench", "sha256": "0" * 64},
    }  # fmt: skip
    set_alias("bench-lgb", "champion", register(result.run_id, "bench-lgb", meta))
    return uri


def snapshots(instruments: int, count: int) -> list[bytes]:
    from quarry.data._minute_bars import minute_bars
    from quarry.stream import encode

    bars = minute_bars(instruments, sessions=1, minutes=count, missing=0.0, seed=3)
    return [encode(when, part.drop("date"))
            for (when,), part in bars.group_by(["date"], maintain_order=True)]  # fmt: skip


def done(outputs: Path) -> int:
    try:
        with sqlite3.connect(outputs / "stream.db") as db:
            return int(db.execute("SELECT COUNT(*) FROM bars_done").fetchone()[0])
    except sqlite3.Error:
        return 0


def one_run(kind: str, rate: float, bodies: list[bytes], args: argparse.Namespace,
            root: Path) -> dict[str, Any]:  # fmt: skip
    from quarry.stream import connect

    tag = f"bench{int(time.time() * 1000) % 10**9}"
    subjects = {n: f"{tag}.{n}" for n in ("bars", "scores", "positions", "orders", "dead_letter")}
    outputs = root / tag
    config = root / f"{tag}.yaml"
    lines = [f"broker: {URLS[kind]}", f"durable: {tag}", "model: bench-lgb@champion",
             f"outputs: {outputs}", "strategy: {topk: 50, n_drop: 5}",
             f"instruments: {args.instruments}", "subjects:"]  # fmt: skip
    config.write_text("\n".join(lines + [f"  {k}: {v}" for k, v in subjects.items()]) + "\n")
    broker = connect(URLS[kind])
    broker.subscribe(subjects["bars"], "warm").close()  # the stream/group exists before
    stream = subprocess.Popen(
        [str(VENV / "quarry"), "stream", "run", "--config", str(config), "--json",
         "--every", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert stream.stderr is not None
    started = stream.stderr.readline()  # the stream's first line: it has subscribed
    if not started.startswith("stream "):
        raise RuntimeError(f"the stream did not start: {started}{stream.stderr.read()}")
    errors: list[str] = []
    threading.Thread(target=lambda: errors.extend(stream.stderr), daemon=True).start()  # type: ignore[arg-type]
    time.sleep(1.0)
    n = int(args.seconds * rate)
    t0 = time.perf_counter()
    behind = 0.0
    for i, body in enumerate(bodies[:n]):
        due = t0 + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        else:
            behind = max(behind, -wait)
        broker.publish(subjects["bars"], body, msg_id=f"b{i}",
                       headers={"quarry-published-at": repr(time.time())})  # fmt: skip
    published_for = time.perf_counter() - t0
    at_end = done(outputs)
    deadline = time.monotonic() + args.drain
    while done(outputs) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    drained = done(outputs)
    stream.send_signal(signal.SIGTERM)
    _, status, usage = os.wait4(stream.pid, 0)
    stream.returncode = os.waitstatus_to_exitcode(status)
    out = stream.stdout.read() if stream.stdout else ""
    try:
        health = json.loads(out) if out.strip() else {}
    except ValueError:
        raise RuntimeError(f"the stream printed no health: {out[-2000:]} {errors[-5:]}") from None
    for subject in subjects.values():
        broker.purge(subject)
    broker.close()
    p99 = health.get("lag_p99_ms")
    return {
        "broker": kind, "rate": rate, "instruments": args.instruments, "published": n,
        "publish_seconds": round(published_for, 2), "publisher_behind_s": round(behind, 3),
        "processed_when_publishing_ended": at_end, "processed": drained,
        "sustained": drained == n and p99 is not None and p99 < 1000,
        "lag_p50_ms": health.get("lag_p50_ms"), "lag_p99_ms": p99,
        "feature_ms_p50": health.get("feature_ms_p50"),
        "feature_ms_p99": health.get("feature_ms_p99"),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "exit": stream.returncode, "stderr_tail": "".join(errors[-3:]).strip()[-300:],
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instruments", type=int, default=16_000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rates", default="1,10")
    p.add_argument("--brokers", default="nats,redis")
    p.add_argument("--drain", type=float, default=30.0)
    args = p.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        root = Path(tmp)
        register_model(root)
        bodies = snapshots(args.instruments, int(args.seconds * max(rates)) + 1)
        results = []
        for kind in args.brokers.split(","):
            for rate in rates:
                r = one_run(kind, rate, bodies, args, root)
                results.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
