"""Windows run on the market calendar, as in Qlib: a day an instrument did not trade inside
its history is a missing row, not a skipped one; days before its first or after its last
listing do not exist for it. References are pandas on each instrument's dense calendar."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quarry.exceptions import DataError, ExpressionError
from quarry.features import Plan, compute


def _market() -> pl.DataFrame:
    """Three instruments over 30 market days: A trades every day but days 7 and 8 (a
    suspension), B lists on day 12, C delists after day 20 and has a gap on day 3."""
    rng = np.random.default_rng(3)
    days = [date(2021, 1, 1) + timedelta(days=i) for i in range(30)]
    rows = []
    for inst, keep in {
        "A": [d for d in range(30) if d not in (7, 8)],
        "B": list(range(12, 30)),
        "C": [d for d in range(21) if d != 3],
    }.items():
        for d in keep:
            rows.append((inst, days[d], float(10 + rng.normal()), float(rng.uniform(1, 9))))
    return pl.DataFrame(rows, schema=["instrument", "date", "close", "volume"], orient="row")


def _dense_reference(frame: pl.DataFrame, fn: object) -> pd.Series:
    """Apply ``fn`` per instrument to its rows reindexed on the market calendar between its
    first and last day (NaN on missing days), then keep the frame's rows."""
    df = frame.to_pandas()
    calendar = sorted(df["date"].unique())
    parts = []
    for inst, g in df.groupby("instrument"):
        span = [d for d in calendar if g["date"].min() <= d <= g["date"].max()]
        dense = g.set_index("date").reindex(span)
        dense["instrument"] = inst
        dense["value"] = fn(dense)  # type: ignore[operator]
        parts.append(dense.reset_index())
    full = pd.concat(parts)
    merged = df.merge(full[["instrument", "date", "value"]], on=["instrument", "date"])
    return merged["value"]


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("Ref($close, 1)", lambda d: d["close"].shift(1)),
        ("Mean($close, 3)", lambda d: d["close"].rolling(3, min_periods=1).mean()),
        ("Count($close, 4)", lambda d: d["close"].rolling(4, min_periods=1).count()),
        ("Std($close, 5)", lambda d: d["close"].rolling(5, min_periods=1).std()),
        (
            "Mean($close > Ref($close, 1), 5)",  # a comparison with NaN is 0 and counts
            lambda d: (d["close"] > d["close"].shift(1)).astype(float).rolling(5, 1).mean(),
        ),
        (
            "IdxMax($close, 4)",  # positions count the suspended rows; NaN "wins"
            lambda d: d["close"].rolling(4, 1).apply(lambda w: np.argmax(w) + 1, raw=True),
        ),
        (
            "Quantile($close, 6, 0.8)",
            lambda d: d["close"].rolling(6, min_periods=1).quantile(0.8),
        ),
        ("Rank($close, 6)", lambda d: d["close"].rolling(6, min_periods=1).rank(pct=True)),
        (
            "Corr($close, $volume, 6)",
            lambda d: d["close"].rolling(6, min_periods=1).corr(d["volume"]),
        ),
    ],
)
def test_windows_count_suspended_days(text: str, reference: object) -> None:
    frame = _market()
    got = compute(frame, {"x": text})["x"].to_numpy()
    expected = _dense_reference(frame, reference).to_numpy(dtype=float)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, equal_nan=True)


def test_results_keep_the_frames_rows_and_order() -> None:
    frame = _market().sample(fraction=1.0, shuffle=True, seed=1)
    got = compute(frame, {"x": "Ref($close, 1)"})
    assert got.select("instrument", "date").equals(frame.select("instrument", "date"))


def test_a_late_listing_starts_its_windows_on_its_first_day() -> None:
    frame = _market()
    got = compute(frame, {"n": "Count($close, 10)", "p": "Mean($close > 0, 10)"})
    b = got.filter(pl.col("instrument") == "B")
    # Nothing before the listing is counted: 1, 2, 3, ... up to the window.
    assert b["n"].to_list()[:10] == [float(i) for i in range(1, 11)]
    assert b["p"].to_list()[:3] == [1.0, 1.0, 1.0]


def test_a_shared_std_is_computed_once_for_corr_and_the_feature() -> None:
    plan = Plan.build({"s": "Std($close, 5)", "c": "Corr($close, $volume, 5)"})
    stds = [n for n in plan.nodes if n.op == "Std"]
    assert [str(n) for n in stds] == ["Std($close, 5)", "Std($volume, 5)"]


def test_quantiles_of_one_window_are_fused_and_match_pandas() -> None:
    frame = _market()
    got = compute(
        frame,
        {
            "u": "Quantile($close, 5, 0.8)",
            "d": "Quantile($close, 5, 0.2)",
            "m": "Med($close, 5)",
        },
    )
    for col, q in (("u", 0.8), ("d", 0.2), ("m", 0.5)):
        expected = _dense_reference(
            frame,
            lambda d, q=q: d["close"].rolling(5, min_periods=1).quantile(q),
        )
        np.testing.assert_allclose(got[col].to_numpy(), expected, rtol=1e-12, equal_nan=True)


def test_windows_read_infinity_as_missing_like_pandas() -> None:
    values = [1.0, np.inf, 2.0, 3.0, -np.inf, 4.0, 5.0, 6.0]
    frame = pl.DataFrame(
        {
            "instrument": ["A"] * len(values),
            "date": [date(2021, 1, 1) + timedelta(days=i) for i in range(len(values))],
            "x": values,
        }
    )
    ops = {"Mean": "mean", "Sum": "sum", "Std": "std", "Max": "max", "Count": "count"}
    got = compute(frame, {op: f"{op}($x, 3)" for op in ops})
    s = pd.Series(values)
    for op, method in ops.items():
        expected = getattr(s.rolling(3, min_periods=1), method)().to_numpy()
        np.testing.assert_allclose(got[op].to_numpy(), expected, rtol=1e-12, equal_nan=True)


def test_duplicate_rows_are_refused() -> None:
    frame = pl.concat([_market(), _market().head(1)])
    with pytest.raises(DataError, match="repeat instrument 'A'"):
        compute(frame, {"x": "$close"})


def test_mask_reads_another_instruments_series_on_each_ones_days() -> None:
    frame = _market()
    got = compute(
        frame, {"m": 'Mask($close, "A")', "rs": 'Mean($close, 3) - Mask(Mean($close, 3), "A")'}
    )
    df = frame.to_pandas()
    a = df[df["instrument"] == "A"].set_index("date")["close"]
    calendar = sorted(df["date"].unique())
    a_dense = a.reindex(calendar)  # NaN on A's suspended days
    a_mean = a_dense.rolling(3, min_periods=1).mean()
    expected_m = df["date"].map(a_dense).to_numpy(dtype=float)
    own_mean = _dense_reference(frame, lambda d: d["close"].rolling(3, min_periods=1).mean())
    expected_rs = own_mean.to_numpy(dtype=float) - df["date"].map(a_mean).to_numpy(dtype=float)
    np.testing.assert_allclose(got["m"].to_numpy(), expected_m, equal_nan=True)
    np.testing.assert_allclose(got["rs"].to_numpy(), expected_rs, rtol=1e-12, equal_nan=True)


def test_mask_names_a_missing_instrument() -> None:
    with pytest.raises(ExpressionError, match=r"no instrument 'a' in the data; did you mean 'A'"):
        compute(_market(), {"m": 'Mask($close, "a")'})
    with pytest.raises(ExpressionError, match="must be an instrument code"):
        compute(_market(), {"m": "Mask($close, 3)"})
