"""The statistical and regression operators against pandas and numpy references, with the
Qlib conventions recorded in docs/qlib_operators.md."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quarry.features._compile import compute
from tests.features.helpers import by_instrument


def _fit(w: np.ndarray) -> tuple[float, float, float, float]:
    """slope, intercept, r^2 and the last point's residual of w on positions 1..len(w)."""
    x = np.arange(1, len(w) + 1, dtype=float)
    ok = ~np.isnan(w)
    if ok.sum() < 2:
        return (np.nan,) * 4
    slope, intercept = np.polyfit(x[ok], w[ok], 1)
    r = np.corrcoef(x[ok], w[ok])[0, 1] if np.std(w[ok]) > 0 else np.nan
    resi = w[-1] - (slope * x[-1] + intercept) if ok[-1] else np.nan
    return slope, intercept, r * r, resi


def _roll(g: pd.DataFrame, n: int, f: object) -> pd.Series:
    return g["close"].rolling(n, min_periods=1).apply(f, raw=True)  # type: ignore[arg-type]


@pytest.mark.parametrize("n", [5, 20, 60])
@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("Med($close, {n})", lambda g, n: g["close"].rolling(n, min_periods=1).median()),
        ("Skew($close, {n})", lambda g, n: g["close"].rolling(n, min_periods=1).skew()),
        ("Kurt($close, {n})", lambda g, n: g["close"].rolling(n, min_periods=1).kurt()),
        (
            "Quantile($close, {n}, 0.8)",
            lambda g, n: g["close"].rolling(n, min_periods=1).quantile(0.8),
        ),
        ("Rank($close, {n})", lambda g, n: g["close"].rolling(n, min_periods=1).rank(pct=True)),
        ("EMA($close, {n})", lambda g, n: g["close"].ewm(span=n, min_periods=1).mean()),
        (
            "Mad($close, {n})",
            lambda g, n: _roll(g, n, lambda w: np.nanmean(np.abs(w - np.nanmean(w)))),
        ),
        (
            "Cov($close, $volume, {n})",
            lambda g, n: g["close"].rolling(n, min_periods=1).cov(g["volume"]),
        ),
        (
            "Corr($close, $volume, {n})",
            lambda g, n: g["close"].rolling(n, min_periods=1).corr(g["volume"]),
        ),
        ("Slope($close, {n})", lambda g, n: _roll(g, n, lambda w: _fit(w)[0])),
        ("Rsquare($close, {n})", lambda g, n: _roll(g, n, lambda w: _fit(w)[2])),
        ("Resi($close, {n})", lambda g, n: _roll(g, n, lambda w: _fit(w)[3])),
    ],
)
def test_operator_matches_reference(
    frame: pl.DataFrame, text: str, reference: object, n: int
) -> None:
    got = compute(frame, {"x": text.format(n=n)})["x"].to_numpy()
    expected = by_instrument(frame, lambda g: reference(g, n))  # type: ignore[operator]
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-9, equal_nan=True)


def test_corr_and_rsquare_are_masked_on_flat_windows() -> None:
    days = pd.bdate_range("2020-01-01", periods=8)
    df = pl.DataFrame(
        {
            "instrument": "A",
            "date": days.values.astype("datetime64[D]"),
            "a": [1.0, 1.0, 1.0, 1.0, 2.0, 3.0, 2.0, 5.0],
            "b": [1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 6.0, 9.0],
        }
    )
    got = compute(df, {"c": "Corr($a, $b, 3)", "r": "Rsquare($a, 3)"})
    # The first four rows of $a are flat: Qlib returns NaN there, not 0/0 noise.
    assert got["c"][:4].null_count() == 4 and got["r"][:4].null_count() == 4
    assert got["c"][7] == pytest.approx(np.corrcoef([3.0, 2.0, 5.0], [7.0, 6.0, 9.0])[0, 1])


def _qlib_idx(w: np.ndarray, largest: bool) -> float:
    # np.argmax/argmin over the raw window, as Qlib applies them (a NaN wins), plus one.
    return float((np.argmax(w) if largest else np.argmin(w)) + 1)


def _qlib_wma(w: np.ndarray) -> float:
    weights = np.arange(1, len(w) + 1, dtype=float)
    weights /= weights.sum()
    return float(np.nanmean(weights * w))


@pytest.mark.parametrize("n", [1, 5, 20, 60])
@pytest.mark.parametrize(
    ("op", "fn"),
    [
        ("IdxMax", lambda w: _qlib_idx(w, True)),
        ("IdxMin", lambda w: _qlib_idx(w, False)),
        ("WMA", _qlib_wma),
    ],
)
def test_window_position_operators(frame: pl.DataFrame, op: str, fn: object, n: int) -> None:
    got = compute(frame, {"x": f"{op}($close, {n})"})["x"].to_numpy()
    expected = by_instrument(frame, lambda g: _roll(g, n, fn))
    np.testing.assert_allclose(got, expected, rtol=1e-9, equal_nan=True)


def test_idxmax_counts_from_the_oldest_row_and_prefers_the_oldest_tie() -> None:
    days = pd.bdate_range("2020-01-01", periods=5)
    df = pl.DataFrame(
        {
            "instrument": "A",
            "date": days.values.astype("datetime64[D]"),
            "x": [3.0, 1.0, 3.0, 2.0, 0.0],
        }
    )
    got = compute(df, {"i": "IdxMax($x, 3)", "j": "IdxMin($x, 3)"})
    assert got["i"].to_list() == [1.0, 1.0, 1.0, 2.0, 1.0]
    assert got["j"].to_list() == [1.0, 2.0, 2.0, 1.0, 3.0]


def test_cs_neutralize_removes_the_industry_mean() -> None:
    df = pl.DataFrame(
        {
            "instrument": ["A", "B", "C", "A", "B", "C"],
            "date": [pd.Timestamp("2020-01-01").date()] * 3
            + [pd.Timestamp("2020-01-02").date()] * 3,
            "x": [1.0, 3.0, 10.0, 2.0, 2.0, 5.0],
            "industry": ["tech", "tech", "energy", "tech", "tech", "energy"],
        }
    ).sort("instrument", "date")
    got = compute(df, {"n": "CSNeutralize($x, $industry)"}).sort("date", "instrument")
    assert got["n"].to_list() == [-1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
