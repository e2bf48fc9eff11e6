"""Online features: bar-by-bar values equal research's batch values, from the same plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from quarry.data._minute_bars import minute_bars
from quarry.exceptions import DataError, ExpressionError
from quarry.features import Plan, alpha158, compute
from quarry.features._online import OnlineFeatures, lookback


def stream_through(online: OnlineFeatures, bars: pl.DataFrame) -> pl.DataFrame:
    parts = [
        online.update(when, part) for (when,), part in bars.group_by(["date"], maintain_order=True)
    ]
    return pl.concat(parts)


def parity_failures(
    batch: pl.DataFrame, online: pl.DataFrame, names: list[str], tol: float = 1e-9
) -> list[str]:
    """Each feature whose online values differ from the batch ones, with how."""
    joined = batch.join(online, on=["instrument", "date"], suffix="__online", how="full")
    failures = []
    for name in names:
        a = joined[name].cast(pl.Float64).fill_null(np.nan).to_numpy()
        b = joined[f"{name}__online"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        gaps = int((np.isnan(a) != np.isnan(b)).sum())
        both = ~np.isnan(a) & ~np.isnan(b)
        worst = float(np.max(np.abs(a[both] - b[both]), initial=0.0))
        if gaps or worst > tol * max(1.0, float(np.max(np.abs(a[both]), initial=0.0))):
            failures.append(f"{name}: {gaps} missing on one side only, largest gap {worst:.3g}")
    return failures


def test_alpha158_bar_by_bar_equals_batch_on_minute_bars_with_gaps() -> None:
    bars = minute_bars(40, sessions=3, minutes=45, seed=3)
    features = alpha158()
    online = OnlineFeatures(features)
    streamed = stream_through(online, bars)
    assert streamed.height == bars.height
    assert parity_failures(compute(bars, features), streamed, list(features)) == []


def test_running_sums_do_not_drift_over_long_histories() -> None:
    # Prices near 1,000 moving by parts in a million: raw running sums of positions and
    # squares lose the fit's digits as the history grows; each window is checked against a
    # two-pass numpy fit of its own values.
    rng = np.random.default_rng(1)
    n, w = 6000, 20
    close = 1000 * np.exp(np.cumsum(rng.normal(0, 1e-6, n)))
    days = [datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=i) for i in range(n)]
    frame = pl.DataFrame({"instrument": "A", "date": days, "close": close})
    got = compute(frame, {"r": f"Rsquare($close, {w})", "s": f"Std($close, {w})"})
    for t in (n - 1, n - 7, n // 2):
        y = close[t - w + 1 : t + 1]
        p = np.arange(w)
        r = np.corrcoef(p, y)[0, 1] ** 2
        assert got["r"][t] == pytest.approx(r, abs=1e-9)
        assert got["s"][t] == pytest.approx(np.std(y, ddof=1), rel=1e-9)


def test_a_value_depends_only_on_its_recent_rows() -> None:
    # The same instrument's last rows, computed over its whole history and over a short
    # tail that keeps the anchors (phase), agree to the bit.
    bars = minute_bars(3, sessions=2, minutes=200, seed=5).filter(pl.col("instrument") == "S00000")
    feats = {"m": "Mean($close, 7)", "c": "Corr($close, $volume, 9)", "q": "Slope($close, 11)"}
    whole = compute(bars, feats)
    online = OnlineFeatures(feats)
    tail = stream_through(online, bars)
    assert online.depth == 1 + 2 * 10
    for name in feats:
        np.testing.assert_array_equal(tail[name].to_numpy()[-50:], whole[name].to_numpy()[-50:])


@pytest.mark.parametrize(
    ("exprs", "rows"),
    [
        ({"a": "$close"}, 0),
        ({"a": "Ref($close, 3)"}, 3),
        ({"a": "Max($close, 5)"}, 4),
        ({"a": "Mean($close, 5)"}, 8),  # a running sum: 2N - 2
        ({"a": "Delta($close, 4)"}, 4),
        ({"a": "Delta($close, 0)"}, 0),
        ({"a": "Quantile(Ref($close, 2), 10, 0.8)"}, 11),
        ({"a": "Rank(Max($close, 3), 4)", "b": "Ref($close, 20)"}, 20),
        ({"a": "Corr($close, Ref($volume, 1), 6)"}, 11),
    ],
)
def test_lookback_counts_the_rows_each_operator_reads(exprs: dict[str, str], rows: int) -> None:
    assert lookback(Plan.build(exprs)) == rows


@pytest.mark.parametrize("expr", ["EMA($close, 10)", "Mean($close, 0)", "Max(EMA($close, 3), 2)"])
def test_operators_that_read_all_history_are_refused_by_name(expr: str) -> None:
    with pytest.raises(ExpressionError, match="bounded window"):
        OnlineFeatures({"a": expr})


def test_bars_out_of_time_order_or_repeated_are_refused() -> None:
    online = OnlineFeatures({"a": "Mean($close, 2)"})
    t0 = datetime(2024, 1, 2, tzinfo=UTC)
    online.update(t0, pl.DataFrame({"instrument": ["A"], "close": [1.0]}))
    with pytest.raises(DataError, match="does not come after"):
        online.update(t0, pl.DataFrame({"instrument": ["A"], "close": [2.0]}))
    with pytest.raises(DataError, match="repeats instrument 'A'"):
        twice = pl.DataFrame({"instrument": ["A", "A"], "close": [1.0, 2]})
        online.update(t0 + timedelta(1), twice)
