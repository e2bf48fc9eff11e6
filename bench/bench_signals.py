"""Signal analysis in-process: the long-frame path (Polars group-bys over one row per
instrument and date) against the dense-panel path (``analyze_panel``), on the same scores.

Setup: a dates x instruments panel of scores (N(0, 1), 15% missing) and labels (0.02 x score
+ N(0, 1)), seed 0; the long frame holds its cells with both values. Each path runs in a
fresh process (its peak RSS its own), median of --runs; both on every core the process has.
These are in-process figures (the analysis alone, the frame already in memory), labelled as
such in BENCHMARKS.md; ``bench_cli.py`` has the whole backtest command.

    .venv/bin/python bench/bench_signals.py                          # 2,500 x 300
    .venv/bin/python bench/bench_signals.py --days 2520 --instruments 16000 --runs 1
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from datetime import date, timedelta
from typing import Any

from _common import market_parser, peak_rss_mb, run_child  # bench is on sys.path as a script


def _data(days: int, instruments: int) -> tuple[Any, Any, Any, list[str]]:
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((days, instruments))
    labels = 0.02 * scores + rng.standard_normal((days, instruments))
    scores[rng.random((days, instruments)) < 0.15] = np.nan
    dates = pl.Series("date", [date(2010, 1, 1) + timedelta(days=d) for d in range(days)])
    names = [f"I{i:05d}" for i in range(instruments)]
    return scores, labels, dates, names


def child(path: str, days: int, instruments: int) -> None:
    import numpy as np
    import polars as pl

    from quarry.signals import _analysis, analyze, analyze_panel

    scores, labels, dates, names = _data(days, instruments)
    if path == "panel":
        t0 = time.perf_counter()
        report = analyze_panel(scores, labels, dates, names)
    else:
        day, inst = np.nonzero(np.isfinite(scores))
        frame = pl.DataFrame(
            {
                "instrument": pl.Series(names, dtype=pl.String).gather(inst),
                "date": dates.gather(day),
                "score": scores[day, inst],
                "LABEL0": labels[day, inst],
            }
        )
        _analysis.PANEL_FILL = 0  # the long path, whatever the frame's fill
        t0 = time.perf_counter()
        report = analyze(frame, one_row_per_key=True)
    elapsed = time.perf_counter() - t0
    metrics = report.as_dict()
    print(json.dumps({"s": elapsed, "peak_mb": peak_rss_mb(), "rank_ic": metrics["rank_ic"]}))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    args = market_parser(__doc__, 300, 2500).parse_args()
    out: dict[str, Any] = {"days": args.days, "instruments": args.instruments}
    for path in ("long", "panel"):
        runs = [
            run_child(__file__, "--child", path, str(args.days), str(args.instruments))
            for _ in range(args.runs)
        ]
        out[path] = {
            "median_s": round(statistics.median(r["s"] for r in runs), 3),
            "runs_s": [round(r["s"], 3) for r in runs],
            "peak_rss_mb": round(max(r["peak_mb"] for r in runs)),
            "rank_ic": runs[0]["rank_ic"],
        }
    long_ic, panel_ic = out["long"]["rank_ic"], out["panel"]["rank_ic"]
    assert abs(long_ic - panel_ic) < 1e-12, (long_ic, panel_ic)  # the same figures
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
