"""Backtest benchmark: TopK-Dropout (topk 50, n_drop 5, Qlib's benchmark costs and limits)
on a generated market, Quarry against Qlib's own backtest side by side (issue 5).

Each run is a fresh process: the signal (minus the 5-day return, a reversal) is made from
the store beforehand; timed are the alignment with the store's market (reading adjusted
close and volume) and the simulation, reported apart.

With --qlib (the default up to 1,000 instruments), Qlib's backtest runs on the same bars and
signal: the store's adjusted bars rounded to float32 (bench/_data/bars-*.parquet, as
bench_features.py writes them) in a Qlib provider dir (qlib_side.py convert), and
bench/qlib_backtest_side.py times qlib.backtest.backtest with TopkDropoutStrategy in the Qlib
venv (bench/.venv-qlib, made on first use). Both sides' daily net returns are then measured
with quarry.backtest's summary() against the same benchmark (Quarry's equal-weighted
universe), on the days both cover.

    .venv/bin/python bench/bench_backtest.py --instruments 16000 --days 2520
    .venv/bin/python bench/bench_backtest.py --instruments 300 --days 2500
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from _common import (  # the bench folder is on sys.path when run as a script
    float32_bars,
    generated_store,
    market_parser,
    peak_rss_mb,
    reversal_signal,
    run_child,
)

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"


def _run(store_dir: str, signal_path: str, out: str | None = None) -> dict[str, float]:
    import numpy as np
    import polars as pl

    from quarry.backtest import BacktestConfig, Market, align
    from quarry.backtest._run import equal_weight_benchmark
    from quarry.backtest._topk_engine import simulate_topk
    from quarry.data import Store

    config = BacktestConfig(open_cost=0.0005, close_cost=0.0015, min_cost=5, limit_threshold=0.095)
    # Load the compiled engine from numba's cache before the clock starts, as imports are
    # not timed on either side.
    tiny = np.ones((2, 1))
    simulate_topk(tiny, Market(tiny, tiny, tiny), config, topk=1, n_drop=0)
    signal = pl.read_parquet(signal_path)
    t0 = time.perf_counter()
    grid = align(Store(store_dir), signal, deal_price="close")
    t1 = time.perf_counter()
    sim = simulate_topk(grid.scores, grid.market, config, topk=50, n_drop=5)
    t2 = time.perf_counter()
    if out:  # the daily series, not timed
        pl.DataFrame({
            "date": pl.Series(grid.dates).cast(pl.Date),
            "gross": sim.gross,
            "net": sim.net,
            "turnover": sim.turnover,
            "bench": equal_weight_benchmark(grid.market.close),
            "value": sim.value,
        }).write_parquet(out)  # fmt: skip
    return {
        "align_s": t1 - t0,
        "simulate_s": t2 - t1,
        "days": float(len(grid.dates)),
        "orders": float(len(sim.orders["day"])),
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    p = market_parser(__doc__, 16_000, 2_520)
    p.add_argument(
        "--qlib",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run Qlib's backtest side by side (default: up to 1,000 instruments)",
    )
    p.add_argument("--qlib-runs", type=int, default=1, help="Qlib runs (default 1: it is slow)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_run(*args.child)))
        return
    import polars as pl

    from quarry.data import Store, read_bars

    tag = f"{args.instruments}x{args.days}"
    store_dir = generated_store("generated", args.instruments, args.days)
    signal_path = reversal_signal(store_dir, tag)
    quarry_daily = DATA / f"backtest-quarry-{tag}.parquet"
    runs = [
        run_child(__file__, "--child", str(store_dir), str(signal_path), *out)
        for out in [[str(quarry_daily)]] + [[]] * (args.runs - 1)
    ]
    total = [r["align_s"] + r["simulate_s"] for r in runs]
    result: dict[str, Any] = {
        "instruments": args.instruments,
        "days": args.days,
        "orders": runs[0]["orders"],
        "total_median_s": round(statistics.median(total), 2),
        "align_median_s": round(statistics.median(r["align_s"] for r in runs), 2),
        "simulate_median_s": round(statistics.median(r["simulate_s"] for r in runs), 2),
        "runs_total_s": [round(t, 2) for t in total],
        "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs)),
    }  # fmt: skip
    if args.qlib if args.qlib is not None else args.instruments <= 1_000:
        result |= _side_by_side(args.qlib_runs, tag, store_dir, signal_path, quarry_daily, total)
        # The same comparison on the instruments that never delist: Qlib never sells a
        # delisted holding (see BENCHMARKS.md), so this isolates every other semantic.
        bars = read_bars(Store(store_dir), ["close"], adjust="adjusted")
        last = bars.group_by("instrument").agg(pl.col("date").max())
        survivors = last.filter(pl.col("date") == bars["date"].max())["instrument"]
        survivor_signal = DATA / f"signal-reversal-survivors-{tag}.parquet"
        pl.read_parquet(signal_path).filter(
            pl.col("instrument").is_in(survivors.implode())
        ).write_parquet(survivor_signal)
        daily = DATA / f"backtest-quarry-survivors-{tag}.parquet"
        run = run_child(__file__, "--child", str(store_dir), str(survivor_signal), str(daily))
        same = _side_by_side(
            1, f"{tag}", store_dir, survivor_signal, daily,
            [run["align_s"] + run["simulate_s"]], name="survivors-",
        )  # fmt: skip
        keys = ("instruments_kept", "excess_annualized_return_quarry",
                "excess_annualized_return_qlib", "excess_rel_diff", "max_abs_daily_net_diff",
                "net_return_correlation", "metrics_quarry", "metrics_qlib")  # fmt: skip
        same["instruments_kept"] = survivors.len()
        result["survivors"] = {k: same[k] for k in keys}
    print(json.dumps(result, indent=2))


def _side_by_side(
    qlib_runs: int,
    tag: str,
    store_dir: Path,
    signal_path: Path,
    quarry_daily: Path,
    quarry_total: list[float],
    name: str = "",
) -> dict[str, Any]:
    """Qlib's backtest on the same bars and signal, and both measured alike."""
    import numpy as np
    import polars as pl

    from bench_features import _qlib_python
    from quarry.backtest import summary

    bars_path, qlib_dir = float32_bars(store_dir, tag), DATA / f"qlib-{tag}"
    python = _qlib_python()
    if not (qlib_dir / "calendars" / "day.txt").exists():
        run_child(
            str(HERE / "qlib_side.py"), "convert", str(bars_path), str(qlib_dir), python=python
        )
    bench_path = DATA / f"backtest-bench-{name}{tag}.parquet"
    qlib_daily = DATA / f"backtest-qlib-{name}{tag}.parquet"
    ours = pl.read_parquet(quarry_daily)
    ours.select("date", "bench").write_parquet(bench_path)
    side = str(HERE / "qlib_backtest_side.py")
    args_q = ["run", str(qlib_dir), str(signal_path), str(bench_path), str(qlib_daily)]
    qruns = [run_child(side, *args_q, python=python) for _ in range(qlib_runs)]
    theirs = pl.read_parquet(qlib_daily).with_columns(pl.col("date").cast(pl.Date))
    both = ours.join(theirs, on="date", how="inner", suffix="_qlib").sort("date")

    def measure(net: str, gross: str, turnover: str) -> dict[str, Any]:
        m = summary(both[net], both[gross], both["bench"], both[turnover])
        keys = ("annualized_return", "excess_annualized_return", "information_ratio", "sharpe")
        return {k: round(float(m[k]), 7) for k in keys} | {"turnover": round(m["turnover"], 4)}

    q = measure("net", "gross", "turnover")
    k = measure("net_qlib", "return", "turnover_qlib")
    qlib_s = statistics.median(r["s"] for r in qruns)
    quarry_s = statistics.median(quarry_total)
    corr = float(np.corrcoef(both["net"].to_numpy(), both["net_qlib"].to_numpy())[0, 1])
    excess_q, excess_k = q["excess_annualized_return"], k["excess_annualized_return"]
    return {
        "qlib_s": round(qlib_s, 2),
        "qlib_runs_s": [round(r["s"], 2) for r in qruns],
        "qlib_peak_rss_mb": round(max(r["peak_rss_mb"] for r in qruns)),
        "quarry_s": round(quarry_s, 3),
        "speedup": round(qlib_s / quarry_s, 1),
        "days_compared": both.height,
        "excess_annualized_return_quarry": excess_q,
        "excess_annualized_return_qlib": excess_k,
        "excess_rel_diff": float(f"{abs(excess_q - excess_k) / abs(excess_k):.2g}"),
        "max_abs_daily_net_diff": float(f"{(both['net'] - both['net_qlib']).abs().max():.2g}"),
        "net_return_correlation": round(corr, 4),
        "bench_max_abs_diff_in_qlib_report": float(
            (both["bench"] - both["bench_qlib"]).abs().max()
        ),
        "metrics_quarry": q,
        "metrics_qlib": k,
        "qlib_versions": qruns[0]["versions"],
    }


if __name__ == "__main__":
    main()
