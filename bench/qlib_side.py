"""Qlib side of the feature benchmark; run by the Qlib venv's python (bench/.venv-qlib), never by
Quarry's, and it does not import quarry.

    convert BARS WORKDIR      write a Parquet long frame of bars (instrument, date, open, high, low,
                              close, volume, vwap) as a Qlib provider dir, the way dump_bin does
    run WORKDIR [--out PATH]  time D.features for Alpha158's 158 fields and LABEL0 over every
                              instrument and the whole calendar; print one JSON line; with --out,
                              write the result (instrument, date, 158 names, LABEL0) to Parquet

The conversion is a separate process so that neither its time nor its memory counts.
"""

from __future__ import annotations

import argparse
import itertools
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FIELDS = ["open", "high", "low", "close", "volume", "vwap"]
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"


def peak_rss_mb() -> float:
    """Peak RSS (VmHWM) of this process since its exec, in MiB (as bench/_common.py)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def convert(bars_path: str, workdir: str) -> dict[str, object]:
    """Qlib's binary layout: calendars/day.txt (the union of dates), instruments/all.txt (each
    instrument's first and last date), features/<inst lowercase>/<field>.day.bin (little-endian
    float32: the start index in the calendar, then one value a calendar day from the first to the
    last date, NaN where the instrument has no bar). A ``factor`` of 1.0: the prices are adjusted
    already."""
    t0 = time.perf_counter()
    bars = pq.read_table(bars_path)
    inst = np.asarray(bars.column("instrument").to_pylist(), dtype=object)
    dates = bars.column("date").cast(pa.int32()).to_numpy()  # days since the epoch
    calendar = np.unique(dates)
    pos = np.searchsorted(calendar, dates)
    root = Path(workdir)
    if root.exists():
        shutil.rmtree(root)
    (root / "calendars").mkdir(parents=True)
    (root / "instruments").mkdir()
    day_str = np.datetime_as_string(calendar.astype("datetime64[D]"), unit="D")
    (root / "calendars" / "day.txt").write_text("\n".join(day_str) + "\n")
    values = {f: bars.column(f).to_numpy(zero_copy_only=False).astype(np.float64) for f in FIELDS}
    order = np.lexsort((pos, inst))
    inst, pos = inst[order], pos[order]
    values = {f: v[order] for f, v in values.items()}
    values["factor"] = np.ones(len(pos))
    bounds = np.flatnonzero(np.r_[True, inst[1:] != inst[:-1], True])
    lines, gaps = [], 0
    for lo, hi in itertools.pairwise(bounds):
        name, p = inst[lo], pos[lo:hi]
        first, last = int(p[0]), int(p[-1])
        gaps += last - first + 1 - len(p)
        lines.append(f"{name}\t{day_str[first]}\t{day_str[last]}")
        out_dir = root / "features" / name.lower()
        out_dir.mkdir(parents=True)
        for f, v in values.items():
            data = np.full(last - first + 2, np.nan, dtype="<f4")
            data[0] = first
            data[1 + p - first] = v[lo:hi]
            data.tofile(out_dir / f"{f}.day.bin")
    (root / "instruments" / "all.txt").write_text("\n".join(lines) + "\n")
    return {
        "convert_s": time.perf_counter() - t0,
        "instruments": len(lines),
        "calendar_days": len(calendar),
        "bars": len(pos),
        "gap_days_filled_with_nan": gaps,
    }


def run(workdir: str, out: str | None) -> dict[str, object]:
    import pandas as pd
    import qlib
    from qlib.contrib.data.loader import Alpha158DL
    from qlib.data import D

    qlib.init(
        provider_uri=workdir,
        region="us",
        kernels=1,
        expression_cache=None,
        dataset_cache=None,
    )
    fields, names = Alpha158DL.get_feature_config()  # the default config, which Alpha158 uses
    fields, names = [*fields, LABEL], [*names, "LABEL0"]
    children0, cpu0 = _children_cpu_s(), time.process_time()
    t0 = time.perf_counter()
    df = D.features(D.instruments("all"), fields, freq="day")
    seconds = time.perf_counter() - t0
    result: dict[str, object] = {
        "s": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_s": time.process_time() - cpu0,
        # kernels=1 makes joblib run the instruments one by one in this process: a worker
        # process it had started and joined would show as CPU time here (qlib.init's only child
        # is `uname -p`, from platform.processor()).
        "children_cpu_s": _children_cpu_s() - children0,
        "rows": len(df),
        "columns": df.shape[1],
        "versions": {
            "qlib": qlib.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
    }
    if out:
        df.columns = [names[fields.index(c)] for c in df.columns]
        df = df[names]
        original = {i.lower(): i for i in _instruments(workdir)}
        inst = df.index.get_level_values("instrument").astype(str)
        table = pa.table({
            "instrument": pa.array([original.get(i.lower(), i) for i in inst], pa.string()),
            "date": pa.array(df.index.get_level_values("datetime").values.astype("datetime64[D]")),
            **{n: pa.array(df[n].to_numpy(), pa.float32()) for n in names},
        })  # fmt: skip
        pq.write_table(table, out)
    return result


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _instruments(workdir: str) -> list[str]:
    lines = (Path(workdir) / "instruments" / "all.txt").read_text().splitlines()
    return [line.split("\t")[0] for line in lines]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("bars")
    c.add_argument("workdir")
    r = sub.add_parser("run")
    r.add_argument("workdir")
    r.add_argument("--out")
    args = p.parse_args()
    if args.cmd == "convert":
        print(json.dumps(convert(args.bars, args.workdir)))
    else:
        print(json.dumps(run(args.workdir, args.out)))


if __name__ == "__main__":
    main()
