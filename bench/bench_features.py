"""Feature benchmark: Alpha158 and its default label, Qlib against Quarry, on a generated market.

Both sides get the same adjusted bars (open, high, low, close, volume, vwap) of a generated store,
rounded to float32 (the precision Qlib stores every field in) in bench/_data/bars-*.parquet.
Qlib (pyqlib, pinned in bench/requirements-qlib.txt) runs in a venv of its own,
bench/.venv-qlib, made on first use; bench/qlib_side.py writes the bars as a Qlib provider
dir (not timed), then times D.features for the 158 fields and LABEL0 with kernels=1. Quarry
times quarry.features.compute (after loading its compiled kernels on a few rows, reported as
warmup_s) once with one thread (NUMBA_NUM_THREADS, POLARS_MAX_THREADS and
OMP_NUM_THREADS at 1) and once with the machine's default threads. Each run is a fresh process;
the median of --runs is reported. Then both outputs are compared cell by cell on the rows they
share: equal if both missing (null or NaN), or both present and |a-b| <= 1e-6 or
|a-b| <= 1e-4*|b| (b: Qlib; an infinity only equals itself).

    .venv/bin/python bench/bench_features.py                 # 300 instruments x 2,500 days
    .venv/bin/python bench/bench_features.py --skip-qlib     # reuse the last Qlib output
    .venv/bin/python bench/bench_features.py --instruments 1000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import (  # the bench folder is on sys.path when run as a script
    float32_bars,
    generated_store,
    market_parser,
    peak_rss_mb,
    run_child,
)

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data"
QLIB_VENV = HERE / ".venv-qlib"
QLIB_REQUIREMENTS = HERE / "requirements-qlib.txt"
FIELDS = ["open", "high", "low", "close", "volume", "vwap"]
ONE_THREAD = {
    "NUMBA_NUM_THREADS": "1",
    "POLARS_MAX_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
ABS_TOL, REL_TOL = 1e-6, 1e-4
KEYS = ["instrument", "date"]


def _quarry(bars_path: str, out: str | None) -> dict[str, float]:
    import polars as pl

    from quarry.features import DEFAULT_LABEL, alpha158, compute

    # The same float32 values Qlib reads from its binary files, widened back to float64.
    bars = pl.read_parquet(bars_path).with_columns(pl.col(FIELDS).cast(pl.Float64))
    # Load the compiled kernels from numba's on-disk cache first, as Qlib's imports and
    # qlib.init happen before its timed call too; reported apart as warmup_s.
    w0 = time.perf_counter()
    compute(bars.head(200), alpha158(), label=DEFAULT_LABEL)
    warmup = time.perf_counter() - w0
    t0 = time.perf_counter()
    df = compute(bars, alpha158(), label=DEFAULT_LABEL)
    result = {
        "s": time.perf_counter() - t0,
        "warmup_s": warmup,
        "rows": df.height,
        "peak_rss_mb": peak_rss_mb(),
    }
    if out:
        df.write_parquet(out)
    return result


def _qlib_python() -> str:
    """The Qlib venv's python, made (or brought up to date with the requirements) if needed."""
    python = QLIB_VENV / "bin" / "python"
    stamp = QLIB_VENV / "requirements-qlib.txt"  # what was installed last
    wanted = QLIB_REQUIREMENTS.read_text()
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return str(python)
    if not python.exists():
        base = shutil.which("python3.11") or sys.executable
        print(f"creating {QLIB_VENV} ...", file=sys.stderr)
        subprocess.run([base, "-m", "venv", str(QLIB_VENV)], check=True)
    print(f"installing {QLIB_REQUIREMENTS.name} (a few minutes) ...", file=sys.stderr)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(QLIB_REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return str(python)


def _missing(c: Any) -> Any:
    return c.is_null() | c.is_nan()


def _example(row: dict[str, Any]) -> dict[str, Any]:
    """A row as strict JSON: the date as text, NaN and infinities as "nan", "inf" and "-inf"."""
    fix = {k: str(v) for k, v in row.items() if k == "date" or (v is not None and v != v)}
    fix |= {k: str(v) for k, v in row.items() if isinstance(v, float) and abs(v) == float("inf")}
    return {**row, **fix}


def _compare(quarry_path: Path, qlib_path: Path) -> dict[str, Any]:
    """Cell-by-cell comparison on the rows both sides have (b = Qlib)."""
    import polars as pl

    qr = pl.read_parquet(quarry_path)
    ql = pl.read_parquet(qlib_path)
    qr = qr.with_columns(pl.col("date").cast(pl.Date))
    ql = ql.with_columns(pl.col("date").cast(pl.Date))
    names = [c for c in ql.columns if c in qr.columns and c not in KEYS]
    only = {
        "features_only_quarry": [c for c in qr.columns if c not in ql.columns],
        "features_only_qlib": [c for c in ql.columns if c not in qr.columns],
        "rows_only_quarry": qr.join(ql, on=KEYS, how="anti").height,
        "rows_only_qlib": ql.join(qr, on=KEYS, how="anti").height,
    }
    both = qr.select(*KEYS, *[pl.col(n).cast(pl.Float64).alias(f"a:{n}") for n in names]).join(
        ql.select(*KEYS, *[pl.col(n).cast(pl.Float64).alias(f"b:{n}") for n in names]),
        on=KEYS,
        how="inner",
    )
    both = both.sort(KEYS)

    def kinds(n: str) -> dict[str, Any]:
        a, b = pl.col(f"a:{n}"), pl.col(f"b:{n}")
        diff = (a - b).abs()
        close = (a == b) | (
            a.is_finite() & b.is_finite() & ((diff <= ABS_TOL) | (diff <= REL_TOL * b.abs()))
        )
        present = ~_missing(a) & ~_missing(b)
        return {
            "present": present,
            "equal": present & close,
            "quarry_missing_only": _missing(a) & ~_missing(b),
            "qlib_missing_only": ~_missing(a) & _missing(b),
            "both_missing": _missing(a) & _missing(b),
        }

    counts = both.select(
        expr.sum().alias(f"{k}|{n}") for n in names for k, expr in kinds(n).items()
    ).row(0, named=True)
    per = {n: {k: int(counts[f"{k}|{n}"]) for k in kinds(n)} for n in names}
    total = {k: sum(p[k] for p in per.values()) for k in kinds(names[0])}
    for p in per.values():
        p["mismatches"] = (
            p["present"] - p["equal"] + p["quarry_missing_only"] + p["qlib_missing_only"]
        )
    worst = sorted((n for n in names if per[n]["mismatches"]), key=lambda n: -per[n]["mismatches"])
    worst_out = []
    for n in worst[:10]:
        k = kinds(n)
        bad = both.filter(~(k["equal"] | k["both_missing"])).select(
            *KEYS, pl.col(f"a:{n}").alias("quarry"), pl.col(f"b:{n}").alias("qlib")
        )
        entry: dict[str, Any] = {
            "feature": n,
            **{k: per[n][k] for k in ("mismatches", "quarry_missing_only", "qlib_missing_only")},
            "first": _example(bad.row(0, named=True)),
        }
        err = (pl.col("quarry") - pl.col("qlib")).abs() / pl.col("qlib").abs()
        rel = bad.filter(err.is_finite()).with_columns(err.alias("rel_err"))
        if rel.height:
            entry["largest_rel_err"] = _example(rel.sort("rel_err").row(-1, named=True))
        worst_out.append(entry)
    return {
        "rows_compared": both.height,
        **only,
        "cells_both_present": total["present"],
        "equal_share_of_present": round(total["equal"] / max(total["present"], 1), 6),
        "cells_present_not_equal": total["present"] - total["equal"],
        "cells_both_missing": total["both_missing"],
        "cells_missing_quarry_only": total["quarry_missing_only"],
        "cells_missing_qlib_only": total["qlib_missing_only"],
        "features_all_equal": sum(1 for n in names if not per[n]["mismatches"]),
        "features_compared": len(names),
        "worst_features": worst_out,
    }


def _median(runs: list[dict[str, Any]], key: str, digits: int = 2) -> float:
    return round(statistics.median(r[key] for r in runs), digits)


def main() -> None:
    p = market_parser(__doc__, 300, 2_500)
    p.add_argument("--skip-qlib", action="store_true", help="reuse the last Qlib output if present")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(_quarry(args.child, args.out)))
        return

    tag = f"{args.instruments}x{args.days}"
    store_dir = generated_store("generated", args.instruments, args.days)
    bars_path, qlib_dir = float32_bars(store_dir, tag), DATA / f"qlib-{tag}"
    qlib_out, qlib_json = DATA / f"features-qlib-{tag}.parquet", DATA / f"features-qlib-{tag}.json"
    quarry_out = DATA / f"features-quarry-{tag}.parquet"
    if args.skip_qlib and qlib_out.exists() and qlib_json.exists():
        qlib: dict[str, Any] = {**json.loads(qlib_json.read_text()), "reused": True}
    else:
        python = _qlib_python()
        side = str(HERE / "qlib_side.py")
        conv = run_child(side, "convert", str(bars_path), str(qlib_dir), python=python)
        runs = [
            run_child(side, "run", str(qlib_dir), *out, python=python, env=ONE_THREAD)
            for out in [["--out", str(qlib_out)]] + [[]] * (args.runs - 1)
        ]
        qlib = {
            "median_s": _median(runs, "s"),
            "peak_rss_mb": _median(runs, "peak_rss_mb", 0),
            "runs_s": [round(r["s"], 2) for r in runs],
            "cpu_s": _median(runs, "cpu_s"),
            "children_cpu_s": max(r["children_cpu_s"] for r in runs),
            "rows": runs[0]["rows"],
            "convert": conv,
            "versions": runs[0]["versions"],
        }
        qlib_json.write_text(json.dumps(qlib))

    one = [
        run_child(__file__, "--child", str(bars_path), *out, env=ONE_THREAD)
        for out in [["--out", str(quarry_out)]] + [[]] * (args.runs - 1)
    ]
    many = [run_child(__file__, "--child", str(bars_path)) for _ in range(args.runs)]
    cores = os.cpu_count() or 1
    print(json.dumps({
        "instruments": args.instruments,
        "days": args.days,
        "qlib_median_s": qlib["median_s"],
        "qlib_peak_rss_mb": qlib["peak_rss_mb"],
        "quarry_1core_median_s": _median(one, "s"),
        "quarry_warmup_s": _median(one, "warmup_s"),
        f"quarry_{cores}core_median_s": _median(many, "s"),
        "quarry_peak_rss_mb": _median(one, "peak_rss_mb", 0),
        f"quarry_{cores}core_peak_rss_mb": _median(many, "peak_rss_mb", 0),
        "speedup_1core": round(qlib["median_s"] / _median(one, "s", 4), 1),
        f"speedup_{cores}core": round(qlib["median_s"] / _median(many, "s", 4), 1),
        "rows_quarry": one[0]["rows"],
        "qlib": qlib,
        "match": _compare(quarry_out, qlib_out),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
