"""Each operator against a plain pandas computation (Qlib's own semantics are pandas'
rolling functions with min_periods=1), on instruments that start late and stop early, with
missing values inside windows, and windows longer than the history."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from quarry.exceptions import ExpressionError, LookaheadError
from quarry.features._compile import compute
from tests.features.helpers import by_instrument

WINDOWS = [1, 3, 5, 60]  # 60 is longer than any instrument's history


@pytest.mark.parametrize("n", WINDOWS)
@pytest.mark.parametrize(
    ("op", "reference"),
    [
        ("Mean", lambda g, n: g["close"].rolling(n, min_periods=1).mean()),
        ("Sum", lambda g, n: g["close"].rolling(n, min_periods=1).sum()),
        ("Std", lambda g, n: g["close"].rolling(n, min_periods=1).std()),
        ("Var", lambda g, n: g["close"].rolling(n, min_periods=1).var()),
        ("Max", lambda g, n: g["close"].rolling(n, min_periods=1).max()),
        ("Min", lambda g, n: g["close"].rolling(n, min_periods=1).min()),
        ("Count", lambda g, n: g["close"].rolling(n, min_periods=1).count()),
        ("Ref", lambda g, n: g["close"].shift(n)),
        ("Delta", lambda g, n: g["close"] - g["close"].shift(n)),
    ],
)
def test_time_series_operator(frame: pl.DataFrame, op: str, reference: object, n: int) -> None:
    got = compute(frame, {"x": f"{op}($close, {n})"})["x"].to_numpy()
    expected = by_instrument(frame, lambda g: reference(g, n))  # type: ignore[operator]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("op", ["Mean", "Sum", "Max", "Min", "Count", "Std"])
def test_window_zero_is_the_whole_history(frame: pl.DataFrame, op: str) -> None:
    got = compute(frame, {"x": f"{op}($close, 0)"})["x"].to_numpy()
    method = {"Count": "count"}.get(op, op.lower())
    expected = by_instrument(
        frame, lambda g: getattr(g["close"].expanding(min_periods=1), method)()
    )
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        (
            "$close / Ref($close, 1) - 1",
            lambda d: d["close"] / d.groupby("instrument")["close"].shift(1) - 1,
        ),
        ("Log($volume + 1)", lambda d: np.log(d["volume"] + 1)),
        ("Abs(-$close)", lambda d: d["close"].abs()),
        ("Sign($close - 10)", lambda d: np.sign(d["close"] - 10)),
        ("Power($close, 2)", lambda d: d["close"] ** 2),
        (
            "Greater($close, 10)",
            lambda d: d["close"].where(d["close"].isna() | (d["close"] > 10), 10.0),
        ),
        (
            "Less($close, 10)",
            lambda d: d["close"].where(d["close"].isna() | (d["close"] < 10), 10.0),
        ),
        ("If($close > 10, 1, -1)", lambda d: np.where(d["close"] > 10, 1.0, -1.0)),
        (
            "($close > 10) & ($volume > 500)",
            lambda d: ((d["close"] > 10) & (d["volume"] > 500)).astype(float),
        ),
        (
            "($close < 10) | ($volume >= 500)",
            lambda d: ((d["close"] < 10) | (d["volume"] >= 500)).astype(float),
        ),
        # A comparison with a missing value is false (true for !=), as numpy's is.
        ("Not($close > 10)", lambda d: (~(d["close"] > 10)).astype(float)),
        ("$close <= 10", lambda d: (d["close"] <= 10).astype(float)),
        ("$close == $close", lambda d: (d["close"] == d["close"]).astype(float)),
        ("$close != $close", lambda d: (d["close"] != d["close"]).astype(float)),
        ("-$close * 2 / $volume", lambda d: -d["close"] * 2 / d["volume"]),
    ],
)
def test_elementwise(frame: pl.DataFrame, text: str, reference: object) -> None:
    got = compute(frame, {"x": text})["x"].to_numpy()
    expected = np.asarray(reference(frame.to_pandas()), dtype=float)  # type: ignore[operator]
    np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True)


def test_cross_sectional(frame: pl.DataFrame) -> None:
    got = compute(frame, {"r": "CSRank($close)", "z": "CSZScore($close)", "d": "CSDemean($close)"})
    df = frame.to_pandas()
    by = df.groupby("date")["close"]
    np.testing.assert_allclose(got["r"].to_numpy(), by.rank(pct=True).to_numpy(), equal_nan=True)
    z = (df["close"] - by.transform("mean")) / by.transform("std")
    np.testing.assert_allclose(got["z"].to_numpy(), z.to_numpy(), equal_nan=True)
    np.testing.assert_allclose(
        got["d"].to_numpy(), (df["close"] - by.transform("mean")).to_numpy(), equal_nan=True
    )


def test_label_may_look_ahead_but_a_feature_may_not(frame: pl.DataFrame) -> None:
    out = compute(frame, {"ma": "Mean($close, 5)"}, label="Ref($close, -2)/Ref($close, -1) - 1")
    g = frame.to_pandas().groupby("instrument")["close"]
    expected = g.shift(-2) / g.shift(-1) - 1
    np.testing.assert_allclose(out["LABEL0"].to_numpy(), expected.to_numpy(), equal_nan=True)
    with pytest.raises(
        LookaheadError, match=r"Ref\(\$close, -1\) reads 1 row\(s\) into the future"
    ):
        compute(frame, {"leak": "Mean(Ref($close, -1), 5) / $close"})


def test_unknown_field_names_the_closest(frame: pl.DataFrame) -> None:
    with pytest.raises(ExpressionError, match=r"unknown field \$clsoe \(did you mean \$close\?\)"):
        compute(frame, {"x": "$clsoe"})


def test_division_by_zero_keeps_infinity_like_qlib() -> None:
    df = pl.DataFrame(
        {
            "instrument": ["A"] * 3,
            "date": [date(2020, 1, d) for d in (1, 2, 3)],
            "x": [1.0, 0.0, 2.0],
            "y": [0.0, 0.0, 1.0],
        }
    )
    got = compute(df, {"q": "$x / $y", "m": "Mean($x / $y, 2)"})
    assert got["q"].to_list() == [float("inf"), None, 2.0]  # 0/0 is missing, 1/0 is inf
    # Windows read infinity as missing, as pandas' rolling functions (so Qlib's) do.
    assert got["m"].to_list() == [None, None, 2.0]
