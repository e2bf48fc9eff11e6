"""Feature benchmark: Alpha158 (and its default label) on a generated market.

Quarry only for now; the side-by-side run against Qlib in a venv of its own is still to come
(issue 3). Each run is a fresh process; the median of --runs is reported.

    .venv/bin/python bench/bench_features.py                 # 300 instruments x 2,500 days
    .venv/bin/python bench/bench_features.py --instruments 1000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import peak_rss_mb, run_child  # the bench folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent


def _run(store_dir: str) -> dict[str, float]:
    from quarry.data import Store, read_bars
    from quarry.features import DEFAULT_LABEL, alpha158, compute

    bars = read_bars(
        Store(store_dir), ["open", "high", "low", "close", "volume", "vwap"], adjust="adjusted"
    )
    t0 = time.perf_counter()
    out = compute(bars, alpha158(), label=DEFAULT_LABEL)
    return {"s": time.perf_counter() - t0, "rows": out.height, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instruments", type=int, default=300)
    p.add_argument("--days", type=int, default=2_500)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_run(args.child)))
        return
    from quarry.data import Store, generate

    store_dir = HERE / "_data" / f"generated-{args.instruments}x{args.days}"
    if not Store(store_dir).exists():
        generate(Store(store_dir), args.instruments, args.days, seed=1)
    runs = [run_child(__file__, "--child", str(store_dir)) for _ in range(args.runs)]
    print(json.dumps({
        "instruments": args.instruments,
        "days": args.days,
        "rows": runs[0]["rows"],
        "alpha158_median_s": round(statistics.median(r["s"] for r in runs), 2),
        "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs)),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
