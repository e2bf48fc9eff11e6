"""Backtest benchmark: TopK-Dropout (topk 50, n_drop 5, Qlib's benchmark costs and limits)
on a generated market, Quarry alone for now (the side-by-side run against Qlib's backtest is
still to come, issue 5).

Each run is a fresh process: the signal (minus the 5-day return, a reversal) is made from
the store beforehand; timed are the alignment with the store's market (reading adjusted
close and volume) and the simulation, reported apart.

    .venv/bin/python bench/bench_backtest.py --instruments 16000 --days 2520
    .venv/bin/python bench/bench_backtest.py --instruments 300 --days 2500
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


def _run(store_dir: str, signal_path: str) -> dict[str, float]:
    import polars as pl

    from quarry.backtest import BacktestConfig, align, simulate
    from quarry.data import Store
    from quarry.portfolio import topk_dropout_day

    signal = pl.read_parquet(signal_path)
    t0 = time.perf_counter()
    grid = align(Store(store_dir), signal, deal_price="close")
    t1 = time.perf_counter()
    config = BacktestConfig(open_cost=0.0005, close_cost=0.0015, min_cost=5, limit_threshold=0.095)

    def rule(s, held, days_held, can_buy, can_sell):  # type: ignore[no-untyped-def]
        return topk_dropout_day(
            s, held, days_held, topk=50, n_drop=5, can_buy=can_buy, can_sell=can_sell
        )

    sim = simulate(grid.scores, grid.market, rule, config)
    t2 = time.perf_counter()
    return {
        "align_s": t1 - t0,
        "simulate_s": t2 - t1,
        "days": float(len(grid.dates)),
        "orders": float(len(sim.orders["day"])),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    p = market_parser(__doc__, 16_000, 2_520)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_run(*args.child)))
        return
    import polars as pl

    from quarry.data import Store, read_bars

    tag = f"{args.instruments}x{args.days}"
    store_dir = generated_store("generated", args.instruments, args.days)
    signal_path = HERE / "_data" / f"signal-reversal-{tag}.parquet"
    if not signal_path.exists():
        bars = read_bars(Store(store_dir), ["close"], adjust="adjusted")
        bars.select(
            "instrument",
            "date",
            score=-(pl.col("close") / pl.col("close").shift(5).over("instrument") - 1),
        ).write_parquet(signal_path)
    runs = [
        run_child(__file__, "--child", str(store_dir), str(signal_path)) for _ in range(args.runs)
    ]
    total = [r["align_s"] + r["simulate_s"] for r in runs]
    print(json.dumps({
        "instruments": args.instruments,
        "days": args.days,
        "orders": runs[0]["orders"],
        "total_median_s": round(statistics.median(total), 2),
        "align_median_s": round(statistics.median(r["align_s"] for r in runs), 2),
        "simulate_median_s": round(statistics.median(r["simulate_s"] for r in runs), 2),
        "runs_total_s": [round(t, 2) for t in total],
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
