"""Stores seeded for the data tests."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import polars as pl

from quarry.data import Store, ingest_frame, table_spec
from tests.helpers import bars_frame


def seed_bars_with_problems(store: Store) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for inst in ("A", "B", "C"):
        price = 10.0
        for d in pd.bdate_range("2020-01-01", periods=40):
            price *= float(np.exp(rng.normal(0, 0.02)))
            rows.append((inst, d.strftime("%Y-%m-%d"), round(price, 2)))
    frame = bars_frame(rows).with_columns(pl.lit(1.0).alias("factor"))
    # Plant problems: a 70% jump in B, a NaN volume in C, a volume spike in A, no factor in C.
    frame = frame.with_columns(
        pl.when((pl.col("instrument") == "B") & (pl.col("date") == date(2020, 1, 15)))
        .then(pl.col("close") * 1.7)
        .otherwise(pl.col("close"))
        .alias("close"),
        pl.when((pl.col("instrument") == "A") & (pl.col("date") == date(2020, 2, 3)))
        .then(pl.lit(9000.0))
        .when((pl.col("instrument") == "C") & (pl.col("date") == date(2020, 1, 7)))
        .then(pl.lit(float("nan")))
        .otherwise(pl.col("volume"))
        .alias("volume"),
        pl.when(pl.col("instrument") == "C").then(None).otherwise(pl.col("factor")).alias("factor"),
    ).with_columns(pl.max_horizontal("high", "close").alias("high"))
    ingest_frame(store, table_spec("bars"), frame, knowledge_time="2020-06-01")
    return frame
