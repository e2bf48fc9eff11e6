"""Daily appends on top of a bulk history: ingest time per day, and a full read afterwards.

Copies the store that ``bench_store.py`` wrote (run that first), ingests ``--days`` daily
files of one new date for every instrument, then reads the 5 price/volume fields of the
whole table in a fresh process.

    .venv/bin/python bench/bench_store.py --runs 1 && .venv/bin/python bench/bench_appends.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from _common import peak_rss_mb, run_child  # the bench folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
FIELDS = ["open", "high", "low", "close", "volume"]


def _append(store_dir: str, days: int) -> list[float]:
    import numpy as np
    import polars as pl

    from quarry.data import Store, ingest_frame, read_bars, table_spec

    store = Store(store_dir)
    last = read_bars(store, ["close"]).select(pl.col("instrument"), pl.col("date").max())
    names, end = last["instrument"].unique().sort(), last["date"].max()
    rng = np.random.default_rng(0)
    times = []
    for k in range(days):
        day = np.busday_offset(np.datetime64(end, "D"), k + 1, roll="forward")
        c = np.round(rng.uniform(10, 50, len(names)), 2)
        frame = pl.DataFrame(
            {"instrument": names, "date": np.full(len(names), day), "open": c, "high": c,
             "low": c, "close": c, "volume": np.ones(len(names))}
        )  # fmt: skip
        t0 = time.perf_counter()
        ingest_frame(store, table_spec("bars"), frame, knowledge_time=f"2030-01-{k + 1:02d}")
        times.append(time.perf_counter() - t0)
    return times


def _read(store_dir: str) -> dict[str, float]:
    from quarry.data import Store, read_bars

    t0 = time.perf_counter()
    df = read_bars(Store(store_dir), FIELDS)
    return {"read_s": time.perf_counter() - t0, "rows": df.height, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--days", type=int, default=5)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--child", choices=["read"], help=argparse.SUPPRESS)
    p.add_argument("--dir", default=str(HERE / "_data" / "appended"))
    args = p.parse_args()
    if args.child:
        print(json.dumps(_read(args.dir)))
        return
    source = HERE / "_data" / "store"
    if not source.exists():
        sys.exit(f"{source} is missing: run bench/bench_store.py first")
    shutil.rmtree(args.dir, ignore_errors=True)
    shutil.copytree(source, args.dir)
    ingest = _append(args.dir, args.days)
    reads = [run_child(__file__, "--child", "read", "--dir", args.dir) for _ in range(args.runs)]
    reads.sort(key=lambda r: r["read_s"])
    mid = reads[len(reads) // 2]
    print(json.dumps({
        "ingest_s_per_day": [round(t, 2) for t in ingest],
        "rows": mid["rows"],
        "read_median_s": round(mid["read_s"], 2),
        "read_peak_rss_mb": round(mid["peak_rss_mb"]),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
