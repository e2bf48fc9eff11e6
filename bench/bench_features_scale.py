"""Feature benchmark at scale: Alpha158 and its label for 16,000 instruments x 2,520 days,
out-of-core, through the command line a researcher would run.

Each run is a fresh process running ``quarry features compute --store S --set alpha158
--label ... --out F --memory M --no-cache``; it reports wall time, peak RSS (VmHWM of that process)
and what was written. The store is generated once under bench/_data/ (about 70 s, 8 GB).

    .venv/bin/python bench/bench_features_scale.py                    # 16,000 x 2,520
    .venv/bin/python bench/bench_features_scale.py --instruments 2000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from _common import (  # the bench folder is on sys.path when run as a script
    generated_store,
    peak_rss_mb,
    run_child,
)

HERE = Path(__file__).resolve().parent
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"


def _run(store_dir: str, out: str, memory: str) -> dict[str, float]:
    from quarry.cli import main

    argv = ["quarry", "features", "compute", "--store", store_dir, "--set", "alpha158"]
    # --no-cache: every run computes everything (a cached rerun would only copy files).
    sys.argv = [*argv, "--label", LABEL, "--out", out, "--memory", memory, "--no-cache"]
    t0 = time.perf_counter()
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    seconds = time.perf_counter() - t0
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(out).metadata
    return {
        "s": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "rows": meta.num_rows,
        "columns": meta.num_columns,
        "file_gb": Path(out).stat().st_size / 2**30,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instruments", type=int, default=16_000)
    p.add_argument("--days", type=int, default=2_520)
    p.add_argument("--memory", default="6GB", help="the --memory setting of the command")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_run(*args.child)))
        return

    store_dir = generated_store("generated", args.instruments, args.days)
    out = HERE / "_data" / f"alpha158-{args.instruments}x{args.days}.parquet"
    runs = []
    for _ in range(args.runs):
        runs.append(run_child(__file__, "--child", str(store_dir), str(out), args.memory))
        print(json.dumps(runs[-1]), file=sys.stderr)
    print(json.dumps({
        "instruments": args.instruments,
        "days": args.days,
        "memory_setting": args.memory,
        "rows": runs[0]["rows"],
        "columns": runs[0]["columns"],
        "file_gb": round(runs[0]["file_gb"], 2),
        "median_s": round(statistics.median(r["s"] for r in runs), 1),
        "runs_s": [round(r["s"], 1) for r in runs],
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
