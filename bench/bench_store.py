"""Store benchmark: write and read 16,000 instruments x 2,520 days of daily bars.

Writes OHLCV, vwap and factor (prices on a cent grid, as vendors deliver them) as one commit,
then a vendor correction of 400 bars as a second commit, and reads the 5 price/volume fields
of the whole table back through ``read_bars`` (point-in-time resolution included). Each write
and read runs in a fresh process so that its peak RSS is its own.

    .venv/bin/python bench/bench_store.py                  # the full size, 5 reads
    .venv/bin/python bench/bench_store.py --instruments 2000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from _common import peak_rss_mb, run_child  # the bench folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
FIELDS = ["open", "high", "low", "close", "volume"]


def _write(store_dir: str, instruments: int, days: int) -> dict[str, float]:
    from datetime import UTC, datetime

    import numpy as np
    import polars as pl

    from quarry.data import Store, ingest_frame, table_spec

    rng = np.random.default_rng(0)
    dates = np.busday_offset(np.datetime64("2010-01-04"), np.arange(days), roll="forward")
    logp = np.cumsum(rng.standard_t(4, (instruments, days)) * 0.015, axis=1)
    close = np.round(np.exp(logp + rng.normal(np.log(40), 0.8, (instruments, 1))), 2)
    open_ = np.round(close * np.exp(rng.normal(0, 0.004, close.shape)), 2)
    high = np.round(np.maximum(open_, close) * 1.004, 2)
    low = np.round(np.minimum(open_, close) * 0.996, 2)
    frame = pl.DataFrame(
        {
            "instrument": np.repeat([f"SYN{i:05d}" for i in range(instruments)], days),
            "date": np.tile(dates, instruments),
            "open": open_.ravel(),
            "high": high.ravel(),
            "low": low.ravel(),
            "close": close.ravel(),
            "volume": np.round(np.exp(rng.normal(13, 0.5, close.size))),
            "vwap": np.round((open_ + high + low + close).ravel() / 4, 2),
            "factor": np.repeat(rng.choice([1.0, 2.0, 3.0], instruments), days),
        }
    )
    del logp, close, open_, high, low
    store = Store(store_dir)
    spec = table_spec("bars")
    t0 = time.perf_counter()
    store.commit(spec, frame, knowledge_time=datetime(2020, 1, 1, tzinfo=UTC), base=None)
    write_s = time.perf_counter() - t0
    fix = frame.sample(400, seed=1).with_columns(pl.col("close") + 0.01)
    t0 = time.perf_counter()
    ingest_frame(store, spec, fix, knowledge_time="2020-01-08")
    correction_s = time.perf_counter() - t0
    return {
        "rows": frame.height,
        "raw_float64_mb": frame.height * 7 * 8 / 2**20,
        "write_s": write_s,
        "correction_s": correction_s,
        "write_peak_rss_mb": peak_rss_mb(),
    }


def _read(store_dir: str) -> dict[str, float]:
    from quarry.data import Store, read_bars

    t0 = time.perf_counter()
    df = read_bars(Store(store_dir), FIELDS)
    read_s = time.perf_counter() - t0
    return {
        "read_s": read_s,
        "rows": df.height,
        "decoded_mb": df.estimated_size("mb"),
        "read_peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instruments", type=int, default=16_000)
    p.add_argument("--days", type=int, default=2_520)
    p.add_argument("--runs", type=int, default=5, help="reads to take the median of")
    p.add_argument("--dir", default=str(HERE / "_data" / "store"))
    p.add_argument("--child", choices=["write", "read"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child == "write":
        print(json.dumps(_write(args.dir, args.instruments, args.days)))
        return
    if args.child == "read":
        print(json.dumps(_read(args.dir)))
        return

    shutil.rmtree(args.dir, ignore_errors=True)
    print(f"writing {args.instruments} x {args.days} bars to {args.dir} ...", flush=True)
    w = run_child(
        __file__,
        "--child",
        "write",
        "--dir",
        args.dir,
        "--instruments",
        str(args.instruments),
        "--days",
        str(args.days),
    )
    disk_mb = sum(f.stat().st_size for f in Path(args.dir).rglob("*") if f.is_file()) / 2**20
    reads = []
    for i in range(args.runs):
        reads.append(run_child(__file__, "--child", "read", "--dir", args.dir))
        print(f"read {i + 1}/{args.runs}: {reads[-1]['read_s']:.2f} s", flush=True)
    times = [r["read_s"] for r in reads]
    rss = [r["read_peak_rss_mb"] for r in reads]
    summary = {
        "instruments": args.instruments,
        "days": args.days,
        "rows": w["rows"],
        "write_s": round(w["write_s"], 2),
        "correction_commit_s": round(w["correction_s"], 2),
        "write_peak_rss_mb": round(w["write_peak_rss_mb"]),
        "read_5_fields_median_s": round(statistics.median(times), 2),
        "read_min_s": round(min(times), 2),
        "read_max_s": round(max(times), 2),
        "read_peak_rss_mb": round(statistics.median(rss)),
        "decoded_mb": round(reads[0]["decoded_mb"]),
        "rss_over_decoded": round(statistics.median(rss) / reads[0]["decoded_mb"], 2),
        "disk_mb": round(disk_mb),
        "raw_float64_mb": round(w["raw_float64_mb"]),
        "disk_over_raw_float64": round(disk_mb / w["raw_float64_mb"], 3),
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
