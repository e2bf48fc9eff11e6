"""Features over a generated store, and the segments the model tests train on."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from quarry.data import Store, generate, read_bars
from quarry.features import DEFAULT_LABEL, compute
from quarry.models import Segments

# A few momentum/reversal and volatility features; the planted alpha is minus the 5-day
# log return, which the first one carries (up to a monotone transform).
FEATURES = {
    "ROC5": "Ref($close, 5)/$close",
    "ROC1": "Ref($close, 1)/$close",
    "ROC20": "Ref($close, 20)/$close",
    "STD20": "Std($close/Ref($close, 1), 20)",
    "VMA5": "Mean($volume, 5)/($volume+1e-12)",
    "MA10": "Mean($close, 10)/$close",
}
SEGMENTS = Segments.parse(
    {
        "train": "2015-01-02:2016-06-30",
        "valid": "2016-07-06:2016-12-30",
        "test": "2017-01-05:2017-12-29",
    }
)


def feature_frame(tmp_path: Path, alpha_ic: float, seed: int) -> pl.DataFrame:
    """FEATURES and the default label over a generated store of 120 instruments, 800 days."""
    store = Store(tmp_path / f"store-{seed}")
    generate(store, 120, 800, seed=seed, alpha_ic=alpha_ic)
    bars = read_bars(store, ["close", "volume"], adjust="adjusted")
    return compute(bars, FEATURES, label=DEFAULT_LABEL)
