"""Backtest metrics against empyrical-reloaded on the same return series, and by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import empyrical as ep
import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from quarry.backtest import (
    PERIODS_PER_YEAR,
    annualized_return,
    annualized_volatility,
    calmar,
    excess_annualized_return,
    hit_rate,
    information_ratio,
    max_drawdown,
    sharpe,
    summary,
)
from quarry.exceptions import UsageError

Array = npt.NDArray[np.float64]
KEYS = [
    "annualized_return",
    "annualized_volatility",
    "sharpe",
    "max_drawdown",
    "excess_annualized_return",
    "information_ratio",
    "turnover",
    "calmar",
    "hit_rate",
]


def _random(seed: int, n: int = 500, nan_share: float = 0.0) -> Array:
    rng = np.random.default_rng(seed)
    r = rng.normal(0.0004, 0.012, n)
    r[rng.random(n) < nan_share] = np.nan
    return r


def _streak() -> Array:
    r = _random(7, 300)
    r[100:140] = -0.02  # a long losing streak, then a recovery
    r[140:160] = 0.03
    return r


SERIES: dict[str, Array] = {
    "random": _random(1),
    "random-drift-down": _random(2) - 0.002,
    "with-nan": _random(3, nan_share=0.1),
    "leading-nan": np.concatenate(([np.nan, np.nan], _random(4, 60))),
    "negative-streak": _streak(),
    "all-negative": -np.abs(_random(5, 50)),
    "all-positive": np.abs(_random(6, 50)),
    "flat-positive": np.full(40, 0.001),
    "flat-zero": np.zeros(40),
    "flat-negative": np.full(40, -0.001),
    "one-day-up": np.array([0.02]),
    "one-day-down": np.array([-0.03]),
    "two-days": np.array([0.01, -0.02]),
    "one-present-day": np.array([np.nan, 0.01, np.nan]),
    "empty": np.array([], dtype=np.float64),
    "all-nan": np.full(5, np.nan),
}
BENCHMARKS: dict[str, Array] = {
    name: (_random(100 + i, r.size, nan_share=0.05) * 0.8 if r.size > 3 else r[::-1] / 2)
    for i, (name, r) in enumerate(SERIES.items())
}


def _dropped(r: Array) -> Array:
    return r[~np.isnan(r)]


def _close(ours: float, theirs: Any) -> None:
    assert isinstance(ours, float)
    # Both NaN, both the same infinity, or equal to rounding.
    np.testing.assert_allclose(ours, float(theirs), rtol=1e-10, atol=1e-14)


# -- each function against empyrical ----------------------------------------------------------

# empyrical's own function on the same series. Those marked ``raw`` drop NaN the same way, so
# they get the series as it is; the others get it without its NaN days (see the next section).
CASES: list[tuple[str, Callable[[Array], float], Callable[[Array], Any], bool]] = [
    ("annualized_return", annualized_return, lambda r: ep.annual_return(r, period="daily"), False),
    (
        "annualized_volatility",
        annualized_volatility,
        lambda r: ep.annual_volatility(r, period="daily"),
        True,
    ),
    ("sharpe", sharpe, lambda r: ep.sharpe_ratio(r, risk_free=0, period="daily"), True),
    ("max_drawdown", max_drawdown, ep.max_drawdown, True),
    ("calmar", calmar, lambda r: ep.calmar_ratio(r, period="daily"), False),
]


@pytest.mark.parametrize("series", SERIES)
@pytest.mark.parametrize(("name", "ours", "theirs", "raw"), CASES, ids=[c[0] for c in CASES])
def test_matches_empyrical(
    name: str,
    ours: Callable[[Array], float],
    theirs: Callable[[Array], Any],
    raw: bool,
    series: str,
) -> None:
    r = SERIES[series]
    if series == "all-nan" and name == "max_drawdown":
        raw = False  # empyrical counts NaN as 0% days: no days here, so NaN rather than 0
    expected = theirs(r.copy() if raw else _dropped(r))
    _close(ours(r), expected)
    _close(ours(list(r)), expected)  # any array-like


@pytest.mark.parametrize("series", SERIES)
def test_information_ratio_is_excess_sharpe_annualized(series: str) -> None:
    r, b = SERIES[series], BENCHMARKS[series]
    # excess_sharpe is mean(r - b) / std(r - b) per day, not annualized.
    expected = ep.excess_sharpe(r.copy(), b.copy()) * math.sqrt(PERIODS_PER_YEAR)
    _close(information_ratio(r, b), expected)


@pytest.mark.parametrize("series", SERIES)
def test_excess_annualized_return_compounds_the_active_returns(series: str) -> None:
    r, b = SERIES[series], BENCHMARKS[series]
    expected = ep.annual_return(_dropped(r - b), period="daily")
    _close(excess_annualized_return(r, b), expected)


def test_excess_annualized_return_by_hand() -> None:
    r = np.array([0.10, 0.10, np.nan, 0.0])
    b = np.array([0.05, 0.00, 0.02, np.nan])
    # Only the first two days have both; active returns 5% and 10%, compounded over 2 days.
    assert excess_annualized_return(r, b) == pytest.approx((1.05 * 1.10) ** 126 - 1)
    # Not the difference of the two annualized returns.
    assert excess_annualized_return(r, b) != pytest.approx(
        annualized_return(r) - annualized_return(b)
    )


def test_metrics_are_not_interchangeable() -> None:
    # A check that the cases above compare different things: were one function wired to
    # another's formula, at least one of these would coincide.
    r, b = SERIES["random"], BENCHMARKS["random"]
    values = [
        annualized_return(r),
        annualized_volatility(r),
        sharpe(r),
        max_drawdown(r),
        calmar(r),
        excess_annualized_return(r, b),
        information_ratio(r, b),
        hit_rate(r),
    ]
    assert len({round(v, 8) for v in values}) == len(values)
    assert information_ratio(r, b) == pytest.approx(
        ep.excess_sharpe(r, b) * math.sqrt(PERIODS_PER_YEAR)
    )
    assert information_ratio(r, b) != pytest.approx(ep.excess_sharpe(r, b))


def test_values_by_hand() -> None:
    r = [0.01, 0.03]
    assert sharpe(r) == pytest.approx(0.02 / math.sqrt(0.0002) * math.sqrt(252))
    assert annualized_volatility(r) == pytest.approx(math.sqrt(0.0002) * math.sqrt(252))
    assert annualized_return(r) == pytest.approx((1.01 * 1.03) ** 126 - 1)
    assert max_drawdown([0.1, -0.5, 0.2, -0.1]) == pytest.approx(-0.5)
    assert max_drawdown([-0.1, 0.05]) == pytest.approx(-0.1)  # the start is a peak
    assert max_drawdown([0.01, 0.02]) == 0.0
    assert calmar([0.01, 0.02]) != calmar([0.01, 0.02])  # NaN: no drawdown


# -- missing values and short series ----------------------------------------------------------


def test_nan_days_are_dropped_not_counted_as_flat_days() -> None:
    r = SERIES["with-nan"]
    assert annualized_return(r) == pytest.approx(annualized_return(_dropped(r)), rel=1e-12)
    # empyrical's annual_return counts them in the number of days (as 0% days): it differs.
    counted = ep.annual_return(r, period="daily")
    assert counted == pytest.approx(annualized_return(np.nan_to_num(r)), rel=1e-12)
    assert annualized_return(r) != pytest.approx(counted, rel=1e-6)
    for f in (annualized_volatility, sharpe, max_drawdown, calmar, hit_rate):
        assert f(r) == pytest.approx(f(_dropped(r)), rel=1e-12), f.__name__


def test_benchmark_days_pair_up() -> None:
    r = np.array([0.01, np.nan, 0.02, -0.01, 0.03])
    b = np.array([0.00, 0.01, np.nan, 0.01, 0.01])
    both = np.array([0.01 - 0.00, -0.01 - 0.01, 0.03 - 0.01])
    assert information_ratio(r, b) == pytest.approx(both.mean() / both.std(ddof=1) * math.sqrt(252))
    assert excess_annualized_return(r, b) == pytest.approx(annualized_return(both))


@pytest.mark.parametrize("series", ["empty", "all-nan"])
def test_no_days_give_nan(series: str) -> None:
    r = SERIES[series]
    for f in (annualized_return, annualized_volatility, sharpe, max_drawdown, calmar, hit_rate):
        assert math.isnan(f(r)), f.__name__
    assert math.isnan(information_ratio(r, r))
    assert math.isnan(excess_annualized_return(r, r))


def test_one_day() -> None:
    r = [-0.03]
    for f in (annualized_volatility, sharpe):
        assert math.isnan(f(r)), f.__name__
    assert math.isnan(information_ratio(r, [0.0]))
    # As in empyrical, one day still has a growth rate and a drawdown.
    assert annualized_return(r) == pytest.approx(0.97**252 - 1)
    assert max_drawdown(r) == pytest.approx(-0.03)
    assert hit_rate(r) == 0.0


def test_flat_series_has_infinite_or_undefined_sharpe() -> None:
    assert sharpe([0.001] * 30) == math.inf
    assert sharpe([-0.001] * 30) == -math.inf
    assert math.isnan(sharpe([0.0] * 30))
    assert annualized_volatility([0.001] * 30) == 0.0
    b = np.full(30, 0.0005)
    assert information_ratio(np.full(30, 0.001), b) == math.inf
    assert math.isnan(information_ratio(b, b))


def test_extreme_returns_give_nan_or_inf_without_warnings() -> None:
    assert math.isnan(annualized_return([0.1, -1.5]))  # below -100%: no real growth rate
    assert annualized_return([-1.0, 0.1]) == -1.0
    assert annualized_return([1e3]) == math.inf
    assert math.isnan(calmar([1e3, -0.1]))  # an infinite ratio is NaN, as in empyrical


# -- hit rate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("series", SERIES)
def test_hit_rate_against_pandas(series: str) -> None:
    s = pd.Series(SERIES[series]).dropna()
    expected = float((s > 0).mean()) if len(s) else math.nan
    _close(hit_rate(SERIES[series]), expected)


def test_hit_rate_by_hand() -> None:
    assert hit_rate([0.01, -0.01, 0.0, np.nan, 0.02]) == 0.5  # 0% is not a hit


# -- bad input --------------------------------------------------------------------------------


def test_bad_input_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"infinite value \(inf\) at position 1"):
        sharpe([0.01, np.inf])
    with pytest.raises(UsageError, match=r"one-dimensional .*\(2, 2\)"):
        sharpe([[0.01, 0.02], [0.0, 0.01]])
    with pytest.raises(UsageError, match="must be numbers"):
        sharpe(["a", "b"])
    with pytest.raises(UsageError, match="they have 3 and 2 values"):
        information_ratio([0.01, 0.02, 0.03], [0.0, 0.0])


# -- summary ----------------------------------------------------------------------------------


def _backtest() -> tuple[Array, Array, Array, Array]:
    gross = _random(11, 400, nan_share=0.02)
    turnover = np.abs(_random(12, 400)) * 10
    turnover[0] = np.nan
    net = gross - 0.0015 * np.nan_to_num(turnover)
    benchmark = _random(13, 400) * 0.7
    return net, gross, benchmark, turnover


def test_summary_shape_and_values() -> None:
    net, gross, benchmark, turnover = _backtest()
    out = summary(net, gross, benchmark, turnover)

    assert list(out) == [*KEYS, "gross"]
    assert list(out["gross"]) == KEYS
    for side, r in (("net", net), ("gross", gross)):
        metrics = out if side == "net" else out["gross"]
        expected = {
            "annualized_return": annualized_return(r),
            "annualized_volatility": annualized_volatility(r),
            "sharpe": sharpe(r),
            "max_drawdown": max_drawdown(r),
            "excess_annualized_return": excess_annualized_return(r, benchmark),
            "information_ratio": information_ratio(r, benchmark),
            "turnover": float(np.nanmean(turnover)),
            "calmar": calmar(r),
            "hit_rate": hit_rate(r),
        }
        assert {k: metrics[k] for k in KEYS} == pytest.approx(expected, rel=1e-12), side
        assert all(type(metrics[k]) is float for k in KEYS)

    # Costs lower every return, so net is below gross; turnover does not depend on them.
    assert out["annualized_return"] < out["gross"]["annualized_return"]
    assert out["sharpe"] < out["gross"]["sharpe"]
    assert out["max_drawdown"] < 0
    assert out["turnover"] == out["gross"]["turnover"]
    assert out["sharpe"] == pytest.approx(ep.sharpe_ratio(net, period="daily"), rel=1e-10)
    assert out["gross"]["max_drawdown"] == pytest.approx(ep.max_drawdown(gross), rel=1e-10)
    # Serializable as metrics.json.
    assert json.loads(json.dumps(out))["gross"]["sharpe"] == out["gross"]["sharpe"]


def test_summary_of_short_series_is_nan_without_error() -> None:
    out = summary([], [], [], [])
    assert list(out) == [*KEYS, "gross"]
    assert all(math.isnan(out[k]) for k in KEYS)
    assert all(math.isnan(out["gross"][k]) for k in KEYS)
    one = summary([0.01], [0.02], [0.0], [0.5])
    assert math.isnan(one["sharpe"]) and math.isnan(one["information_ratio"])
    assert one["turnover"] == 0.5 and one["hit_rate"] == 1.0


def test_summary_refuses_series_of_different_lengths() -> None:
    with pytest.raises(UsageError, match="they have 3, 2 and 3 values"):
        summary([0.0] * 3, [0.0] * 2, [0.0] * 3, [0.0] * 3)
