"""Qlib side of the backtest benchmark; run by the Qlib venv's python (bench/.venv-qlib), never by
Quarry's, and it does not import quarry.

    run PROVIDER SIGNAL BENCH OUT   time qlib.backtest.backtest for TopkDropoutStrategy (topk 50,
                                    n_drop 5) on SIGNAL (Parquet: instrument, date, score) over
                                    the provider dir PROVIDER (made by qlib_side.py convert),
                                    with BENCH (Parquet: date, bench) as the benchmark; write the
                                    daily report (date, return, cost, net, turnover, bench, value)
                                    to OUT and print one JSON line

Settings are Quarry's benchmark run: deal price close, open cost 0.0005, close cost 0.0015,
min cost 5, limit threshold 0.095 (buys blocked at limit-up, sells at limit-down:
forbid_all_trade_at_limit=False), trade unit 1 (the prices are adjusted, factor 1), account
1e8, risk degree 0.95 (the strategy's default).

Qlib's exchange reads ``$change`` for the limit: qlib_side.py's converter writes no such field,
so change.day.bin (the close-to-close move on the calendar, NaN after a day without a bar, as
Quarry's engine has it) is added to the provider dir first, not timed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from qlib_side import peak_rss_mb  # the bench folder is on sys.path when run as a script

TOPK, N_DROP = 50, 5
EXCHANGE = {
    "freq": "day",
    "limit_threshold": 0.095,
    "deal_price": "close",
    "open_cost": 0.0005,
    "close_cost": 0.0015,
    "min_cost": 5,
    "trade_unit": 1,
}
ACCOUNT = 1e8


def add_change(provider: str) -> int:
    """Write features/*/change.day.bin from close.day.bin where missing; how many were written."""
    written = 0
    for close_bin in sorted(Path(provider, "features").glob("*/close.day.bin")):
        target = close_bin.with_name("change.day.bin")
        if target.exists():
            continue
        data = np.fromfile(close_bin, dtype="<f4")
        close = data[1:].astype(np.float64)
        change = np.full(close.size, np.nan)
        with np.errstate(invalid="ignore", divide="ignore"):
            change[1:] = close[1:] / close[:-1] - 1.0
        out = np.empty(data.size, dtype="<f4")
        out[0] = data[0]
        out[1:] = change
        out.tofile(target)
        written += 1
    return written


def run(provider: str, signal_path: str, bench_path: str, out: str) -> dict[str, object]:
    import qlib
    from qlib.backtest import backtest
    from qlib.contrib.strategy import TopkDropoutStrategy

    changes = add_change(provider)
    qlib.init(
        provider_uri=provider,
        region="us",
        kernels=1,
        expression_cache=None,
        dataset_cache=None,
    )
    sig = pd.read_parquet(signal_path).dropna(subset=["score"])
    signal = pd.Series(
        sig["score"].to_numpy(np.float64),
        index=pd.MultiIndex.from_arrays(
            [pd.to_datetime(sig["date"]), sig["instrument"].astype(str)],
            names=["datetime", "instrument"],
        ),
    ).sort_index()
    b = pd.read_parquet(bench_path)
    bench = pd.Series(b["bench"].to_numpy(np.float64), index=pd.to_datetime(b["date"]))
    calendar = [
        pd.Timestamp(d) for d in (Path(provider) / "calendars" / "day.txt").read_text().split()
    ]
    # Day 0 has no signal before it (Quarry's day 0 trades nothing either): trade from day 1;
    # Qlib's day-step calendar needs the day after the last step, so it stops one day short.
    start, end = calendar[1], calendar[-2]
    strategy = TopkDropoutStrategy(
        signal=signal, topk=TOPK, n_drop=N_DROP, forbid_all_trade_at_limit=False
    )
    executor = {
        "class": "SimulatorExecutor",
        "module_path": "qlib.backtest.executor",
        "kwargs": {"time_per_step": "day", "generate_portfolio_metrics": True},
    }
    t0 = time.perf_counter()
    portfolio, _ = backtest(
        start_time=start,
        end_time=end,
        strategy=strategy,
        executor=executor,
        benchmark=bench,
        account=ACCOUNT,
        exchange_kwargs=dict(EXCHANGE),
    )
    seconds = time.perf_counter() - t0
    report, _positions = portfolio["1day"]
    frame = pd.DataFrame({
        "date": pd.DatetimeIndex(report.index).values.astype("datetime64[D]"),
        "return": report["return"].to_numpy(np.float64),  # before costs
        "cost": report["cost"].to_numpy(np.float64),
        "net": (report["return"] - report["cost"]).to_numpy(np.float64),
        "turnover": report["turnover"].to_numpy(np.float64),
        "bench": report["bench"].to_numpy(np.float64),
        "value": report["account"].to_numpy(np.float64),
    })  # fmt: skip
    frame.to_parquet(out, index=False)
    return {
        "s": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "days": len(frame),
        "change_bins_written": changes,
        "versions": {"qlib": qlib.__version__, "pandas": pd.__version__, "python": sys.version},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    for name in ("provider", "signal", "bench", "out"):
        r.add_argument(name)
    args = p.parse_args()
    print(json.dumps(run(args.provider, args.signal, args.bench, args.out)))


if __name__ == "__main__":
    main()
