"""Read benchmark on a generated market: raw, adjusted, universe and fundamental reads.

Generates a synthetic store (16,000 instruments x 2,520 days by default: listings,
delistings, splits, dividends, fundamentals and vendor corrections included) once, then
times each kind of full read in a fresh process, taking the median of several runs.

    .venv/bin/python bench/bench_reads.py
    .venv/bin/python bench/bench_reads.py --instruments 2000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _common import (  # the bench folder is on sys.path when run as a script
    generated_store,
    market_parser,
    peak_rss_mb,
    run_child,
)

HERE = Path(__file__).resolve().parent
PRICES = ["open", "high", "low", "close", "volume"]
CASES: dict[str, dict[str, object]] = {
    "raw 5 fields": {"fields": PRICES},
    "adjusted 5 fields": {"fields": PRICES, "adjust": "adjusted"},
    "universe 'all', 5 fields": {"fields": PRICES, "universe": "all"},
    "close + 2 fundamentals": {"fields": ["close", "eps", "book_value_per_share"]},
}


def _read(store_dir: str, case: str) -> dict[str, float]:
    from quarry.data import Store, read_bars

    kwargs = dict(CASES[case])
    fields = kwargs.pop("fields")
    t0 = time.perf_counter()
    df = read_bars(Store(store_dir), fields, **kwargs)  # type: ignore[arg-type]
    return {
        "s": time.perf_counter() - t0,
        "rows": df.height,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    p = market_parser(__doc__, 16_000, 2_520)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_read(args.dir, args.child)))
        return
    store_dir = generated_store("generated", args.instruments, args.days)
    results = {}
    for case in CASES:
        runs = [
            run_child(__file__, "--child", case, "--dir", str(store_dir)) for _ in range(args.runs)
        ]
        results[case] = {
            "rows": runs[0]["rows"],
            "median_s": round(statistics.median(r["s"] for r in runs), 2),
            "peak_rss_mb": round(statistics.median(r["peak_rss_mb"] for r in runs)),
        }
        print(case, results[case], flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
