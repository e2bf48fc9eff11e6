"""Shared test data and references for the feature operators."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import polars as pl


def make_frame() -> pl.DataFrame:
    """Four instruments: full history, a late start, an early stop, and three days only;
    about 10% of closes missing, inside windows."""
    rng = np.random.default_rng(0)
    days = pd.bdate_range("2020-01-01", periods=40)
    parts = []
    for inst, (start, stop) in {"A": (0, 40), "B": (10, 40), "C": (0, 25), "D": (30, 33)}.items():
        n = stop - start
        close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
        vol = rng.uniform(100, 1000, n)
        close[rng.random(n) < 0.1] = np.nan
        parts.append(
            pd.DataFrame(
                {"instrument": inst, "date": days[start:stop], "close": close, "volume": vol}
            )
        )
    df = pd.concat(parts).sort_values(["instrument", "date"])
    return pl.from_pandas(df).with_columns(pl.col("date").cast(pl.Date))


def by_instrument(frame: pl.DataFrame, fn: Callable[[pd.DataFrame], object]) -> np.ndarray:
    """Apply a pandas reference per instrument and return it in the frame's row order."""
    df = frame.to_pandas()
    out = df.groupby("instrument", group_keys=False)[["close", "volume"]].apply(fn)  # type: ignore[arg-type]
    return np.asarray(out, dtype=float)
