"""The health check against a pandas computation, and the dense panel against a pivot."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import polars as pl

from quarry.data import Store, check_health, ingest_frame, read_bars, table_spec, to_panel
from tests.conftest import bars_frame


def _seed(store: Store) -> pl.DataFrame:
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


def test_health_counts_match_pandas(store: Store) -> None:
    frame = _seed(store).to_pandas().sort_values(["instrument", "date"])
    report = {c.name: c for c in check_health(store).checks}
    g = frame.groupby("instrument")
    close_jumps = ((frame["close"] / g["close"].shift(1) - 1).abs() > 0.5).sum()
    vol_jumps = ((frame["volume"] / g["volume"].shift(1) - 1).abs() > 3.0).sum()
    # Up 70% into the spike counts; back down is a fall of 41%, under the threshold.
    assert report["close_jump"].count == close_jumps == 1
    assert {e["instrument"] for e in report["close_jump"].examples} == {"B"}
    assert report["volume_jump"].count == vol_jumps
    assert report["missing_volume"].count == int(frame["volume"].isna().sum()) == 1
    assert report["missing_factor"].count == int(frame["factor"].isna().sum()) == 40
    assert not check_health(store).ok


def test_panel_matches_a_pandas_pivot(store: Store) -> None:
    _seed(store)
    # Drop some rows so the panel has holes to fill with NaN.
    long = read_bars(store, ["close", "volume"]).filter(
        ~((pl.col("instrument") == "B") & (pl.col("date") < date(2020, 1, 10)))
    )
    panel = to_panel(long)
    pivot = long.to_pandas().pivot(index="date", columns="instrument", values="close")
    np.testing.assert_array_equal(panel["close"], pivot.to_numpy())
    assert panel.instruments == list(pivot.columns)
    assert list(panel.dates.astype("datetime64[D]")) == [np.datetime64(d, "D") for d in pivot.index]
