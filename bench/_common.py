"""Helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec, in MiB.

    Read from VmHWM: ``ru_maxrss`` would still count the parent's pages at fork time.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(
    script: str, *args: str, python: str | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``script`` in a fresh Python process and return the JSON on its last line, so that
    each measurement has its own peak RSS and no warm state.

    ``python`` is the interpreter (this one by default); ``env`` holds variables to set on top
    of this process's environment."""
    out = subprocess.run(
        [python or sys.executable, script, *args],
        capture_output=True,
        text=True,
        check=True,
        env=None if env is None else {**os.environ, **env},
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def market_parser(doc: str | None, instruments: int, days: int, runs: int = 3) -> Any:
    """The arguments every market benchmark takes: its size and how many runs."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--instruments", type=int, default=instruments)
    p.add_argument("--days", type=int, default=days)
    p.add_argument("--runs", type=int, default=runs)
    return p


def generated_store(name: str, instruments: int, days: int, **options: Any) -> Path:
    """bench/_data/NAME-INSTRUMENTSxDAYS, generated (seed 1) on first use."""
    from quarry.data import Store, generate

    path = Path(__file__).resolve().parent / "_data" / f"{name}-{instruments}x{days}"
    if not Store(path).exists():
        generate(Store(path), instruments, days, seed=1, **options)
    return path


BAR_FIELDS = ["open", "high", "low", "close", "volume", "vwap"]


def float32_bars(store: Path, tag: str) -> Path:
    """bench/_data/bars-TAG.parquet: the store's adjusted bars rounded to float32, made on
    first use. Qlib stores every field as float32: both sides of a comparison get these, so
    that they compute on the same data."""
    import polars as pl

    from quarry.data import Store, read_bars

    path = store.parent / f"bars-{tag}.parquet"
    if not path.exists():
        bars = read_bars(Store(store), BAR_FIELDS, adjust="adjusted")
        bars.with_columns(pl.col(BAR_FIELDS).cast(pl.Float32)).write_parquet(path)
    return path


def reversal_signal(store: Path, tag: str) -> Path:
    """bench/_data/signal-reversal-TAG.parquet: minus each instrument's 5-day return, the
    backtests' signal, made on first use."""
    import polars as pl

    from quarry.data import Store, read_bars

    path = store.parent / f"signal-reversal-{tag}.parquet"
    if not path.exists():
        close = read_bars(Store(store), ["close"], adjust="adjusted")
        close.select("instrument", "date", score=-(
            pl.col("close") / pl.col("close").shift(5).over("instrument") - 1
        )).write_parquet(path)  # fmt: skip
    return path
