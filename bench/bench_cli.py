"""Whole commands as a user runs them: each a fresh process on one core (``taskset -c 0``),
the median of --runs, beside Qlib's own whole process on the same data where Qlib does the
same job (issue 16). This is the figure a user feels: imports, compiled-kernel loading,
reading, writing and the report are all in it.

Data: the generated market of bench_features.py and bench_backtest.py (``generate`` with
seed 1, --instruments x --days; bench/_data), its adjusted bars rounded to float32 (both sides
compute on the same values) and the reversal signal (minus the 5-day return). Qlib 0.9.7 runs
in bench/.venv-qlib (made on first use, as bench_features.py does): ``qlib_side.py run``
computes Alpha158 and its label from a provider dir of the same bars and writes them to
Parquet; ``qlib_backtest_side.py run`` backtests TopK-Dropout 50/5 with the same costs and
limits. Both are whole processes: Python's start, Qlib's imports and ``qlib.init`` included.

Commands timed (QUARRY_HOME is a fresh folder under bench/_data, so nothing is cached from
an earlier benchmark):

    --help                  quarry --help; quarry backtest --help
    features compute        --bars BARS --set alpha158 --label ... --out F.parquet, and the
                            same with --out F.arrow (Arrow IPC)
    backtest                topk-dropout 50/5, Qlib's costs; with its report, and --no-report
    train                   --model lightgbm on F.parquet, 60/20/20 segments, MLflow tracking
    run (cached)            a workflow (features, LightGBM, backtest, gate) run once untimed,
                            then timed when every step is cached
    backtest, large         --large: 16,000 x 2,520 on both cores, with its report

    .venv/bin/python bench/bench_cli.py                  # 300 x 2,500, Qlib side by side
    .venv/bin/python bench/bench_cli.py --skip-qlib      # Quarry alone
    .venv/bin/python bench/bench_cli.py --only large     # the 16,000 x 2,520 backtest alone
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import (  # the bench folder is on sys.path when run as a script
    float32_bars,
    generated_store,
    market_parser,
    reversal_signal,
)

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
REPO = HERE.parent
QUARRY = str(REPO / ".venv" / "bin" / "quarry")
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"
# Qlib's benchmark settings for TopK-Dropout, as bench_backtest.py and qlib_backtest_side.py
TOPK = ["--strategy", "topk-dropout", "--topk", "50", "--n-drop", "5", "--deal-price", "close",
        "--open-cost", "0.0005", "--close-cost", "0.0015", "--min-cost", "5",
        "--limit-threshold", "0.095"]  # fmt: skip
CASES = ("help", "features", "backtest", "train", "run", "large")


# Runs the command and reports its wall time and peak RSS. The peak is taken from this small
# launcher's RUSAGE_CHILDREN: a child forked straight from the benchmark's own process would
# carry the benchmark's memory high-water mark (Linux keeps the old one across exec).
_LAUNCH = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
elapsed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
sys.stderr.buffer.write(done.stderr)
print(json.dumps([done.returncode, elapsed, peak]))
"""


def whole(argv: list[str], runs: int, *, cores: str = "0", env: dict[str, str] | None = None,
          warm: int = 0) -> dict[str, Any]:  # fmt: skip
    """``argv`` as a fresh process pinned to ``cores``, ``runs`` times: the median wall time,
    every run's, and the largest peak RSS (Linux's KiB; the benchmark needs taskset, and two
    cores for the large case). ``warm`` untimed runs come first (a first run makes files
    later runs reuse, e.g. numba's cache)."""
    times, peaks = [], []
    for i in range(runs + warm):
        done = subprocess.run([sys.executable, "-c", _LAUNCH, "taskset", "-c", cores, *argv],
                              capture_output=True, text=True,
                              env={**os.environ, **(env or {})})  # fmt: skip
        code, elapsed, peak = json.loads(done.stdout.strip().splitlines()[-1])
        if code != 0:
            raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        if i < warm:
            continue
        times.append(elapsed)
        peaks.append(peak)
    return {"median_s": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times], "peak_rss_mb": round(max(peaks))}  # fmt: skip


def _prepare(instruments: int, days: int) -> dict[str, Path]:
    """The store, its float32 bars, the reversal signal (made once, kept in bench/_data)."""
    tag = f"{instruments}x{days}"
    store = generated_store("generated", instruments, days)
    return {"store": store, "bars": float32_bars(store, tag),
            "signal": reversal_signal(store, tag), "tag": Path(tag)}  # fmt: skip


def _qlib(data: dict[str, Path], runs: int, work: Path, bench_returns: Path,
          cases: set[str]) -> dict[str, Any]:  # fmt: skip
    """Qlib's whole process for the features and the backtest (those of ``cases``), on the
    same data; the backtest's benchmark is Quarry's, from ``bench_returns``."""
    import polars as pl

    from bench_features import ONE_THREAD, _qlib_python

    python = _qlib_python()
    provider = DATA / f"qlib-{data['tag']}"
    if not (provider / "calendars" / "day.txt").exists():
        subprocess.run([python, str(HERE / "qlib_side.py"), "convert", str(data["bars"]),
                        str(provider)], check=True, capture_output=True)  # fmt: skip
    out: dict[str, Any] = {}
    if "features" in cases:
        out["features"] = whole([python, str(HERE / "qlib_side.py"), "run", str(provider),
                                 "--out", str(work / "qlib-features.parquet")], runs,
                                env=ONE_THREAD)  # fmt: skip
    if "backtest" not in cases:
        return out
    bench = work / "bench.parquet"
    pl.read_parquet(bench_returns).select("date", bench="benchmark").write_parquet(bench)
    out["backtest"] = whole([python, str(HERE / "qlib_backtest_side.py"), "run", str(provider),
                             str(data["signal"]), str(bench), str(work / "qlib-daily.parquet")],
                            runs, env=ONE_THREAD, warm=1)  # fmt: skip
    return out


def _segments(features: Path) -> list[str]:
    """--train/--valid/--test over the features' dates: 60/20/20, a week apart (the label
    looks two days ahead)."""
    import polars as pl

    dates = pl.read_parquet(features, columns=["date"])["date"].unique().sort().to_list()
    n = len(dates)
    a, b = int(n * 0.6), int(n * 0.8)
    train, valid, test = (dates[70], dates[a]), (dates[a + 5], dates[b]), (dates[b + 5], dates[-3])
    return ["--train", f"{train[0]}:{train[1]}", "--valid", f"{valid[0]}:{valid[1]}",
            "--test", f"{test[0]}:{test[1]}"]  # fmt: skip


def _workflow(path: Path, store: Path, segments: list[str]) -> Path:
    spans = dict(zip(("train", "valid", "test"), segments[1::2], strict=True))
    path.write_text(
        "name: bench_cli\n"
        f"data: {{store: {store}}}\n"
        "features: {set: alpha158}\n"
        f"label: {LABEL}\n"
        "model: {type: lightgbm, seed: 0}\n"
        f"segments: {json.dumps(spans)}\n"
        "backtest: {strategy: topk-dropout, topk: 50, n_drop: 5, deal_price: close, "
        "open_cost: 0.0005, close_cost: 0.0015, min_cost: 5, limit_threshold: 0.095}\n"
        "tracking: {experiment: bench_cli, register: bench_cli, description: 'A workflow of "
        "bench_cli.py, timed when every step is cached.', authors: [bench], licence: Apache-2.0}\n"
    )
    return path


def main() -> None:
    p = market_parser(__doc__, 300, 2_500, runs=5)
    p.add_argument("--skip-qlib", action="store_true", help="Quarry's commands alone")
    p.add_argument("--only", nargs="+", choices=CASES, help="these cases alone")
    p.add_argument("--large-runs", type=int, default=1, help="runs of the 16,000 x 2,520 case")
    args = p.parse_args()
    cases = set(args.only or [c for c in CASES if c != "large"])
    DATA.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="cli-", dir=DATA))
    os.environ["QUARRY_HOME"] = str(work / "home")
    os.environ["QUARRY_NO_PROGRESS"] = "1"
    out: dict[str, Any] = {"instruments": args.instruments, "days": args.days,
                           "runs": args.runs, "cores": "one (taskset -c 0)"}  # fmt: skip
    try:
        if cases & {"features", "backtest", "train", "run"}:
            data = _prepare(args.instruments, args.days)
        if "help" in cases:
            out["help"] = whole([QUARRY, "--help"], args.runs)
            out["backtest_help"] = whole([QUARRY, "backtest", "--help"], args.runs)
        features = work / "features.parquet"
        if cases & {"features", "train"}:
            out["features"] = whole([QUARRY, "features", "compute", "--bars", str(data["bars"]),
                                     "--set", "alpha158", "--label", LABEL, "--out",
                                     str(features)], args.runs, warm=1)  # fmt: skip
        if "features" in cases:  # the same, written as Arrow IPC for a step that reads it next
            out["features_arrow"] = whole([QUARRY, "features", "compute", "--bars",
                                           str(data["bars"]), "--set", "alpha158", "--label",
                                           LABEL, "--out", str(work / "features.arrow")],
                                          args.runs)  # fmt: skip
        if "backtest" in cases:
            base = [QUARRY, "backtest", "--store", str(data["store"]), "--signal",
                    str(data["signal"]), *TOPK]  # fmt: skip
            out["backtest_report"] = whole([*base, "--out", str(work / "bt")], args.runs,
                                           warm=1)  # fmt: skip
            out["backtest_no_report"] = whole([*base, "--no-report", "--out", str(work / "bt2")],
                                              args.runs)  # fmt: skip
        if "train" in cases:
            out["train"] = whole([QUARRY, "train", "--features", str(features), "--model",
                                  "lightgbm", *_segments(features), "--out", str(work / "lgb")],
                                 args.runs)  # fmt: skip
        if "run" in cases:
            if not features.exists():
                subprocess.run([QUARRY, "features", "compute", "--bars", str(data["bars"]),
                                "--set", "alpha158", "--label", LABEL, "--out", str(features)],
                               check=True, capture_output=True)  # fmt: skip
            flow = _workflow(work / "flow.yaml", data["store"], _segments(features))
            # untimed: the run that trains and promotes, then one whose gate runs again
            # against the new champion; from the third on, every step is cached
            out["run_cached"] = whole([QUARRY, "run", str(flow), "--out", str(work / "flow")],
                                      args.runs, warm=2)  # fmt: skip
        if not args.skip_qlib and cases & {"features", "backtest"}:
            out["qlib"] = _qlib(data, args.runs, work, work / "bt" / "returns.parquet", cases)
        if "large" in cases:
            big = _prepare(16_000, 2_520)
            out["large_backtest_2cores"] = whole(
                [QUARRY, "backtest", "--store", str(big["store"]), "--signal", str(big["signal"]),
                 *TOPK, "--out", str(work / "big")],
                args.large_runs, cores="0,1",
            )  # fmt: skip
            out["large"] = "16,000 x 2,520 on both cores (taskset -c 0,1)"
            report = work / "big" / "report.html"
            out["large_report_mb"] = round(report.stat().st_size / 2**20, 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2), flush=True)
    _table(out)


def _table(out: dict[str, Any]) -> None:
    """The figures as BENCHMARKS.md's table."""
    qlib = out.get("qlib", {})
    rows = [("`quarry --help`", "help", None), ("`quarry backtest --help`", "backtest_help", None),
            ("features compute (Alpha158 + label)", "features", "features"),
            ("the same, `--out F.arrow` (Arrow IPC)", "features_arrow", "features"),
            ("backtest topk-dropout, with its report", "backtest_report", "backtest"),
            ("backtest topk-dropout, --no-report", "backtest_no_report", "backtest"),
            ("train LightGBM", "train", None), ("a cached `quarry run`", "run_cached", None),
            ("backtest at 16,000 x 2,520, both cores", "large_backtest_2cores", None)]  # fmt: skip
    print("\n| command (whole process) | Quarry | peak RSS | Qlib | ratio |\n|---|---|---|---|---|")
    for label, key, peer in rows:
        if key not in out:
            continue
        mine = out[key]
        theirs = qlib.get(peer) if peer else None
        ratio = f"{theirs['median_s'] / mine['median_s']:.1f}x" if theirs else ""
        qtext = f"{theirs['median_s']:.2f} s ({theirs['peak_rss_mb']:,} MB)" if theirs else ""
        print(f"| {label} | {mine['median_s']:.2f} s | {mine['peak_rss_mb']:,} MB | {qtext} | "
              f"{ratio} |")  # fmt: skip


if __name__ == "__main__":
    main()
