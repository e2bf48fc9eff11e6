"""Training benchmark: LightGBM (Qlib's Alpha158 benchmark parameters) on Alpha158 of a
generated market with a planted alpha, 1,000 instruments x 2,500 days by default.

The store and the features are made once under bench/_data/ (not timed); each run is a fresh
process timing ``quarry.models.train`` (fit with early stopping on valid, then scoring all
three segments), without MLflow logging; the median of --runs is reported.

    .venv/bin/python bench/bench_train.py
    .venv/bin/python bench/bench_train.py --instruments 300 --runs 1
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
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"


def _segments(days: list[str]) -> dict[str, str]:
    """60% train, 20% valid, 20% test of the calendar, 5 trading days apart."""
    n = len(days)
    a, b = int(n * 0.6), int(n * 0.8)
    return {
        "train": f"{days[0]}:{days[a - 5]}",
        "valid": f"{days[a]}:{days[b - 5]}",
        "test": f"{days[b]}:{days[-1]}",
    }


def _run(features_path: str) -> dict[str, float]:
    import polars as pl

    from quarry.models import Segments, train

    frame = pl.read_parquet(features_path)
    days = [str(d) for d in frame["date"].unique().sort().to_list()]
    t0 = time.perf_counter()
    result = train(frame, Segments.parse(_segments(days)), experiment=None)
    total = time.perf_counter() - t0
    return {
        "s": total,
        "fit_s": result.seconds,
        "rows": frame.height,
        "best_iteration": getattr(result.model, "best_iteration", 0),
        "test_rank_ic": result.metrics["test"]["rank_ic"],
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    p = market_parser(__doc__, 1_000, 2_500)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_run(args.child)))
        return
    from quarry.data import Store
    from quarry.features import alpha158, materialize

    tag = f"{args.instruments}x{args.days}"
    store_dir = generated_store("alpha", args.instruments, args.days, alpha_ic=0.05)
    features = HERE / "_data" / f"alpha158-alpha-{tag}.parquet"
    if not features.exists():
        materialize(Store(store_dir), alpha158(), features, label=LABEL)
    runs = [run_child(__file__, "--child", str(features)) for _ in range(args.runs)]
    print(json.dumps({
        "instruments": args.instruments,
        "days": args.days,
        "rows": runs[0]["rows"],
        "train_median_s": round(statistics.median(r["s"] for r in runs), 1),
        "fit_median_s": round(statistics.median(r["fit_s"] for r in runs), 1),
        "runs_s": [round(r["s"], 1) for r in runs],
        "best_iteration": runs[0]["best_iteration"],
        "test_rank_ic": round(runs[0]["test_rank_ic"], 4),
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
