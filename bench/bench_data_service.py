"""Data service benchmark (issue 18): many clients reading the same bars at once, through the
service (HTTP with the read-through cache cold and warm, and Arrow Flight) and, beside them,
from the store directly with the library.

The store: a generated market of --instruments x --days (bench/_data, made once). The server:
``quarry server start --flight-port`` in a fresh process, the store registered as a public
dataset. The clients: --clients readers at once, as --procs fresh processes of
--clients/--procs threads each (a process stands for a machine: its threads share its
read-through cache, under its own QUARRY_HOME). Each reader reads --fields of every bar, raw,
once per round, and drops the frame.

Rounds, in one run:
- library: each reader calls ``read_bars`` on the store itself (no service);
- http cold: each reader through ``quarry.connect`` over HTTP, every machine's cache empty;
- http warm: the same again: the caches hold the answer at the dataset's commit (a 304);
- flight: each reader over Arrow Flight (parallel streams, no cache).

Figures per round: wall time from the first request to the last answer, aggregate rows/s and
MB/s (the answers' Arrow size in memory), p50/p99 latency of one read, and the client
processes' peak RSS.

    .venv/bin/python bench/bench_data_service.py
    .venv/bin/python bench/bench_data_service.py --clients 8 --instruments 100 --days 250
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import generated_store, peak_rss_mb

ROUNDS = ("library", "http cold", "http warm", "flight")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def client(args: argparse.Namespace) -> None:
    """One client process: --threads readers at once, started together; prints JSON."""
    from quarry.data import Store, connect, read_bars

    fields = args.fields.split(",")
    barrier = threading.Barrier(args.threads)
    out: list[dict[str, float]] = []
    lock = threading.Lock()

    def reader() -> None:
        barrier.wait()
        began = time.perf_counter()
        if args.mode == "library":
            df = read_bars(Store(args.store), fields)
        else:
            url = args.flight if args.mode == "flight" else args.url
            df = connect(url, args.token).bars("market", fields)
        took = time.perf_counter() - began
        with lock:
            out.append(
                {
                    "began": began,
                    "ended": began + took,
                    "seconds": took,
                    "rows": df.height,
                    "bytes": df.estimated_size(),
                }
            )
        del df

    threads = [threading.Thread(target=reader) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(
        json.dumps(
            {
                "reads": out,
                "peak_rss_mb": peak_rss_mb(),
                "clock": time.perf_counter() - time.monotonic(),
            }
        )
    )


def _round(
    mode: str,
    args: argparse.Namespace,
    homes: list[Path],
    url: str,
    flight: str,
    token: str,
    store: Path,
) -> dict[str, Any]:
    per = args.clients // args.procs
    procs = []
    wall0 = time.time()
    for home in homes:
        env = {**os.environ, "QUARRY_HOME": str(home)}
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--client",
                    "--mode",
                    mode,
                    "--threads",
                    str(per),
                    "--url",
                    url,
                    "--flight",
                    flight,
                    "--token",
                    token,
                    "--store",
                    str(store),
                    "--fields",
                    args.fields,
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.time() - wall0
    reads = [r for res in results for r in res["reads"]]
    seconds = sorted(r["seconds"] for r in reads)
    # the round's span: from the first request to the last answer, across processes (each
    # process's perf_counter differs, so the span is taken per process and the longest kept,
    # and the processes start together)
    span = max(
        max(r["ended"] for r in res["reads"]) - min(r["began"] for r in res["reads"])
        for res in results
    )
    rows = sum(r["rows"] for r in reads)
    size = sum(r["bytes"] for r in reads)
    return {
        "mode": mode,
        "clients": len(reads),
        "span_s": round(span, 2),
        "wall_s_with_process_start": round(wall, 2),
        "rows_per_s": round(rows / span),
        "mb_per_s": round(size / 1e6 / span, 1),
        "p50_s": round(seconds[len(seconds) // 2], 3),
        "p99_s": round(seconds[min(len(seconds) - 1, int(0.99 * len(seconds)))], 3),
        "rows_per_read": reads[0]["rows"],
        "mb_per_read": round(reads[0]["bytes"] / 1e6, 1),
        "client_peak_rss_mb": round(max(r["peak_rss_mb"] for r in results)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instruments", type=int, default=1000)
    p.add_argument("--days", type=int, default=2500)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--fields", default="close,volume")
    p.add_argument("--rounds", default=",".join(ROUNDS))
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--mode", "--url", "--flight", "--token", "--store"):
        p.add_argument(hidden, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        client(args)
        return
    if args.clients % args.procs:
        p.error("--clients must be a multiple of --procs")
    store = generated_store("market", args.instruments, args.days)
    work = Path(tempfile.mkdtemp(prefix="quarry-bench-data-"))
    db = f"sqlite:///{work / 'jobs.db'}"
    quarry = [sys.executable, "-m", "quarry.cli"]
    env = {**os.environ, "QUARRY_HOME": str(work / "server")}
    subprocess.run(
        [
            *quarry,
            "datasets",
            "add",
            "market",
            "--store",
            str(store),
            "--owner",
            "bench",
            "--project",
            "bench",
            "--visibility",
            "public",
            "--db",
            db,
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    token = subprocess.run(
        [*quarry, "tokens", "create", "--user", "bench", "--project", "bench", "--db", db],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port, fport = _port(), _port()
    server = subprocess.Popen(
        [
            *quarry,
            "server",
            "start",
            "--port",
            str(port),
            "--db",
            db,
            "--flight-port",
            str(fport),
            "--cpus",
            "1",
            "--memory",
            "1Gi",
        ],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    url, flight = f"http://127.0.0.1:{port}", f"grpc://127.0.0.1:{fport}"
    try:
        from quarry.jobs import Client

        Client(url, token).wait_until_up(60)
        homes = [work / f"machine-{k}" for k in range(args.procs)]
        out = []
        for mode in args.rounds.split(","):
            result = _round(mode, args, homes, url, flight, token, store)
            out.append(result)
            print(json.dumps(result), flush=True)
        with open(f"/proc/{server.pid}/status") as f:
            hwm = next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM"))
        print(
            json.dumps(
                {
                    "server_peak_rss_mb": round(hwm),
                    "instruments": args.instruments,
                    "days": args.days,
                    "fields": args.fields,
                }
            ),
            flush=True,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


if __name__ == "__main__":
    main()
