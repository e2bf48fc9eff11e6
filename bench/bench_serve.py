"""Serving benchmark: ``quarry serve`` against ``mlflow models serve`` for the same registered
model version, side by side in the same run (issue 15).

The model: LightGBM (few boosting rounds) on Alpha158 of a generated market, 500 instruments x
300 days by default, with Qlib's inference processors (RobustZScoreNorm, Fillna), trained and
registered with its metadata in a fresh tracking store (not timed). Two payloads, both raw
Alpha158 features of the market's last day as JSON records (``{"records": [...]}`` for Quarry,
``{"dataframe_records": [...]}`` for MLflow, the same rows):

- one row: one instrument;
- one cross-section: every instrument of the day (500 rows x 158 features), also as an Arrow
  IPC stream for Quarry.

Each server is a fresh process, started for its measurements and stopped after them (one at a
time: the machine's cores are not shared between them). On a machine of two cores or more the
server runs on core 0 and the client on the others (``--no-pin`` to let them share), as a
load generator runs on other machines than the server it measures. After warm-up requests,
each payload is measured for --seconds by a client in a separate process (threads with
keep-alive connections, http.client):

- open loop at a fixed rate (--rate a second for one row, --xs-rate for the cross-section):
  requests are sent at their scheduled times whatever the answers, and the latency counts from
  the scheduled time (a server that stalls is charged for the requests queued behind it);
- closed loop with --connections clients sending back to back: the most answers a second.

Latency p50/p99 in ms and throughput per run; the medians over --runs runs are reported.

The floor: the same client against a bare ASGI app on uvicorn that parses the JSON body, spins
for 0.5 ms and answers (no framework, no model): the latency this machine and this client give
any Python server doing that much work a request, against which the others can be read.

    .venv/bin/python bench/bench_serve.py
    .venv/bin/python bench/bench_serve.py --runs 1 --seconds 5
"""

from __future__ import annotations

import argparse
import http.client
import io
import itertools
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import generated_store, run_child  # the bench folder is on sys.path

HERE = Path(__file__).resolve().parent
VENV = Path(sys.executable).parent
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"
NAME = "bench-serve"
ARROW = "application/vnd.apache.arrow.stream"


# ---------------------------------------------------------------------------- the model


def _model(root: Path, instruments: int, days: int, rounds: int) -> dict[str, Any]:
    """Train and register the model in a fresh tracking store under ``root``; write the
    payloads there. Returns what the servers and the clients need."""
    import polars as pl

    from quarry.data import Store
    from quarry.features import Fillna, Pipeline, RobustZScoreNorm, alpha158, materialize
    from quarry.jobs import JobStore
    from quarry.models import Recipe, Segments, train
    from quarry.tracking import register, set_alias

    tag = f"{instruments}x{days}"
    store = generated_store("alpha", instruments, days, alpha_ic=0.05)
    features = HERE / "_data" / f"alpha158-alpha-{tag}.parquet"
    if not features.exists():
        materialize(Store(store), alpha158(), features, label=LABEL)
    frame = pl.read_parquet(features)
    dates = frame["date"].unique().sort().to_list()
    a, b = int(len(dates) * 0.6), int(len(dates) * 0.8)
    segments = {"train": f"{dates[0]}:{dates[a - 5]}", "valid": f"{dates[a]}:{dates[b - 5]}",
                "test": f"{dates[b]}:{dates[-5]}"}  # fmt: skip
    fit = {"fit_start": str(dates[0]), "fit_end": str(dates[a - 5])}
    steps = Pipeline([RobustZScoreNorm(**fit), Fillna()])
    processed = steps.fit_transform(frame)
    recipe = Recipe(alpha158(), LABEL, steps)
    result = train(processed, Segments.parse(segments), model="lightgbm",
                   params={"num_boost_round": rounds},
                   experiment="bench-serve", recipe=recipe)  # fmt: skip
    assert result.run_id is not None
    metadata = {
        "project": "default", "description": "LightGBM on Alpha158, for bench_serve.py.",
        "authors": ["bench"], "licence": "proprietary", "model_type": "lightgbm",
        "label": LABEL,
        "features": [{"name": n, "expression": e} for n, e in alpha158().items()],
        "training_window": {"start": fit["fit_start"], "end": fit["fit_end"]},
        "data": {"store": str(store), "as_of": None, "universe": None, "commits": {}},
        "workflow": {"path": "bench/bench_serve.py", "sha256": "0" * 64},
    }  # fmt: skip
    version = register(result.run_id, NAME, metadata)
    set_alias(NAME, "champion", version)
    db = f"sqlite:///{root / 'jobs.db'}"
    with JobStore(db) as jobs:
        token = jobs.create_token("bench", "default")

    day = frame.filter(pl.col("date") == dates[-1]).drop("LABEL0").sort("instrument")
    day = day.with_columns(pl.col(pl.Float32).cast(pl.Float64)).fill_nan(None)
    records = [dict(r, date=r["date"].isoformat()) for r in day.to_dicts()]
    sink = io.BytesIO()
    day.write_ipc_stream(sink)
    bodies = {
        "row.quarry": json.dumps({"records": records[:1]}),
        "row.mlflow": json.dumps({"dataframe_records": records[:1]}),
        "xs.quarry": json.dumps({"records": records}),
        "xs.mlflow": json.dumps({"dataframe_records": records}),
    }
    for key, text in bodies.items():
        (root / f"{key}.body").write_text(text)
    (root / "xs-arrow.quarry.body").write_bytes(sink.getvalue())
    return {"store": str(store), "db": db, "token": token, "version": version,
            "rows": day.height, "features": len(alpha158()),
            "bytes": {k: len(v) for k, v in bodies.items()} | {
                "xs-arrow.quarry": len(sink.getvalue())}}  # fmt: skip


# ---------------------------------------------------------------------------- the servers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _floor(port: int) -> None:
    """The floor server (see the module's docstring), run by ``--floor PORT``."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        if scope["path"] != "/ping":
            json.loads(body)
            until = time.perf_counter() + 0.0005
            while time.perf_counter() < until:
                pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b'{"predictions": []}'})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def _pinned(command: list[str], pin: bool) -> list[str]:
    """``command`` on core 0 when pinning (and ``taskset`` is here)."""
    taskset = shutil.which("taskset")
    return [taskset, "-c", "0", *command] if pin and taskset else command


def _start(
    kind: str, root: Path, model: dict[str, Any], env: dict[str, str], pin: bool
) -> tuple[Any, int]:
    """A fresh server process of ``kind`` and its port, once it answers."""
    port = _free_port()
    if kind == "floor":
        command = [sys.executable, __file__, "--floor", str(port)]
        ready = "/ping"
    elif kind == "quarry":
        command = [sys.executable, "-m", "quarry.cli", "serve", "--models", NAME, "--store",
                   model["store"], "--db", model["db"], "--port", str(port)]  # fmt: skip
        ready = "/healthz"
    else:
        command = [str(VENV / "mlflow"), "models", "serve", "-m",
                   f"models:/{NAME}/{model['version']}", "--env-manager", "local",
                   "-p", str(port), "-h", "127.0.0.1"]  # fmt: skip
        ready = "/ping"
    log = open(root / f"{kind}.log", "ab")  # closed by _stop
    process = subprocess.Popen(_pinned(command, pin), env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    process.log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            tail = (root / f"{kind}.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"{kind} server exited:\n{tail}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", ready)
            if conn.getresponse().status == 200:
                return process, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{kind} server did not start: see {root / f'{kind}.log'}")
        time.sleep(0.2)


def _stop(process: Any) -> None:
    os.killpg(process.pid, signal.SIGINT)  # the whole group: MLflow forks uvicorn
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    process.log.close()


# ---------------------------------------------------------------------------- the client


def _client(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement (in its own process): warm-up, then open loop at ``rate`` (a number)
    or closed loop (None) over ``connections`` keep-alive connections."""
    if spec["pin"]:  # off the server's core
        os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
    body = Path(spec["body"]).read_bytes()
    headers = spec["headers"]
    port, path, rate = spec["port"], spec["path"], spec["rate"]
    seconds, connections = spec["seconds"], spec["connections"]

    def connect() -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def send(conn: http.client.HTTPConnection) -> tuple[int, bytes]:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        return r.status, r.read()

    warm, until = connect(), time.perf_counter() + 5  # a slow server gets 5 s at most
    for _ in range(spec["warmup"]):
        status, first = send(warm)
        if status != 200:
            raise SystemExit(f"{path}: {status} {first[:300]!r}")
        if time.perf_counter() > until:
            break
    warm.close()

    slots = itertools.count()
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors, unsent = [0] * connections, [0] * connections
    began = time.perf_counter() + 0.2  # every thread connected and waiting
    end = began + seconds

    def worker(k: int) -> None:
        conn, mine = connect(), latencies[k]
        while True:
            if rate is not None:
                due = began + next(slots) / rate
                if due >= end:
                    break
                if time.perf_counter() > end + 2:  # far behind: what is left is not sent
                    unsent[k] += 1
                    continue
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            else:
                due = time.perf_counter()
                if due >= end:
                    break
            status, _ = send(conn)
            mine.append(time.perf_counter() - due)
            if status != 200:
                errors[k] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    times = sorted(x * 1000 for m in latencies for x in m)
    return {
        "requests": len(times),
        "errors": sum(errors),
        "unsent": sum(unsent),  # open loop: requests still due 2 s after the end
        "per_s": round(len(times) / elapsed, 1),
        "p50_ms": round(times[len(times) // 2], 2),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))], 2),
        "max_ms": round(times[-1], 2),
    }


def _answers(port: int, path: str, body: bytes, headers: dict[str, str]) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body=body, headers=headers)
    r = conn.getresponse()
    out = json.loads(r.read())
    assert r.status == 200, out
    return out


# ---------------------------------------------------------------------------- one run


def _run(root: Path, model: dict[str, Any], env: dict[str, str], args: Any) -> dict[str, Any]:
    """Both servers, fresh, each through every measurement; one figure set per server."""
    json_type = {"Content-Type": "application/json"}
    quarry = {"path": f"/v2/models/{NAME}/predict",
              "headers": {**json_type, "Authorization": f"Bearer {model['token']}"}}  # fmt: skip
    plans = {
        "floor": [("row", "row.quarry", quarry["headers"])],
        "quarry": [("row", "row.quarry", quarry["headers"]),
                   ("xs", "xs.quarry", quarry["headers"]),
                   ("xs_arrow", "xs-arrow.quarry",
                    {**quarry["headers"], "Content-Type": ARROW, "Accept": ARROW})],
        "mlflow": [("row", "row.mlflow", json_type), ("xs", "xs.mlflow", json_type)],
    }  # fmt: skip
    out: dict[str, Any] = {}
    scores: dict[str, list[float]] = {}
    for kind, plan in plans.items():
        process, port = _start(kind, root, model, env, args.pin)
        path = {"quarry": quarry["path"], "mlflow": "/invocations"}.get(kind, "/floor")
        try:
            if kind != "floor":
                got = _answers(port, path, (root / f"xs.{kind}.body").read_bytes(), plan[0][2])
                scores[kind] = ([p["score"] for p in got["predictions"]] if kind == "quarry"
                                else got["predictions"])  # fmt: skip
            for payload, body, headers in plan:
                row = payload == "row"
                common = {"port": port, "path": path, "headers": headers,
                          "body": str(root / f"{body}.body"), "seconds": args.seconds,
                          "warmup": 500 if row else 20, "pin": args.pin}  # fmt: skip
                rate = args.rate if row else args.xs_rate
                opened = run_child(__file__, "--client", json.dumps(
                    common | {"rate": rate, "connections": args.open_connections}))  # fmt: skip
                closed = run_child(__file__, "--client", json.dumps(
                    common | {"rate": None, "connections": args.connections}))  # fmt: skip
                out[f"{kind}.{payload}"] = {"rate_per_s": rate, "open": opened, "closed": closed}
        finally:
            _stop(process)
    # the same model: the same scores, whichever server answered
    a, b = scores["quarry"], scores["mlflow"]
    assert len(a) == len(b) and all(
        abs(x - y) <= 1e-9 * max(1, abs(y)) for x, y in zip(a, b, strict=True)
    ), "the two servers score differently"
    return out


def _median(runs: list[dict[str, Any]], key: str, part: str, figure: str) -> float:
    return round(statistics.median(r[key][part][figure] for r in runs), 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instruments", type=int, default=500)
    p.add_argument("--days", type=int, default=300)
    p.add_argument("--rounds", type=int, default=50, help="LightGBM boosting rounds")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0, help="each measurement's length")
    p.add_argument("--rate", type=float, default=500.0, help="one-row requests a second")
    p.add_argument("--xs-rate", type=float, default=10.0, help="cross-sections a second")
    p.add_argument("--open-connections", type=int, default=16, help="open-loop connections")
    p.add_argument("--connections", type=int, default=8, help="closed-loop connections")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="let the server and the client share every core")  # fmt: skip
    p.add_argument("--client", help=argparse.SUPPRESS)
    p.add_argument("--floor", type=int, help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)  # keep the model there (debugging)
    args = p.parse_args()
    args.pin = args.pin and (os.cpu_count() or 1) >= 2
    if args.floor:
        _floor(args.floor)
        return
    if args.client:
        print(json.dumps(_client(json.loads(args.client))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        os.environ.update({"QUARRY_TRACKING_URI": uri, "QUARRY_HOME": str(root / "home")})
        # MLflow starts uvicorn by name: the venv's bin must be on PATH
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
               "PATH": f"{VENV}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
        began = time.perf_counter()
        saved = root / "model.json"
        if saved.exists():
            model = json.loads(saved.read_text())
        else:
            model = _model(root, args.instruments, args.days, args.rounds)
            saved.write_text(json.dumps(model))
        print(f"model trained and registered in {time.perf_counter() - began:.0f} s",
              file=sys.stderr)  # fmt: skip
        runs = [_run(root, model, env, args) for _ in range(args.runs)]
    summary: dict[str, Any] = {}
    for key in runs[0]:
        summary[key] = {
            "rate_per_s": runs[0][key]["rate_per_s"],
            "open_p50_ms": _median(runs, key, "open", "p50_ms"),
            "open_p99_ms": _median(runs, key, "open", "p99_ms"),
            "closed_p50_ms": _median(runs, key, "closed", "p50_ms"),
            "closed_p99_ms": _median(runs, key, "closed", "p99_ms"),
            "closed_per_s": _median(runs, key, "closed", "per_s"),
            "open_answered_per_s": _median(runs, key, "open", "per_s"),
            "open_unsent": sum(r[key]["open"]["unsent"] for r in runs),
            "errors": sum(r[key][part]["errors"] for r in runs for part in ("open", "closed")),
        }
    print(json.dumps({"instruments": args.instruments, "days": args.days, "pinned": args.pin,
                      "features": model["features"], "rows_xs": model["rows"],
                      "body_bytes": model["bytes"], "seconds": args.seconds, "runs": runs,
                      "median": summary}))  # fmt: skip


if __name__ == "__main__":
    main()
