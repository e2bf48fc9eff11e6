"""Performance metrics of a daily return series, with empyrical's definitions.

Every function takes plain numbers (a 1-D array-like of simple daily returns, ``0.01`` for 1%)
and returns a Python ``float``. Years have ``PERIODS_PER_YEAR = 252`` days and the risk-free
rate is 0. The definitions are empyrical's (``empyrical-reloaded``, ``period='daily'``), and
the tests check each one against it on the same series:

- ``annualized_return``: geometric, ``prod(1 + r) ** (252 / n) - 1`` (``annual_return``).
- ``annualized_volatility``: ``std(r, ddof=1) * sqrt(252)`` (``annual_volatility``).
- ``sharpe``: ``mean(r) / std(r, ddof=1) * sqrt(252)`` (``sharpe_ratio``).
- ``max_drawdown``: the worst fall of wealth from its running peak, a negative fraction, 0 if
  wealth never falls below a peak; the starting wealth counts as a peak (``max_drawdown``).
- ``calmar``: ``annualized_return / -max_drawdown``; NaN without a drawdown (``calmar_ratio``).
- ``excess_annualized_return`` and ``information_ratio``: the two above, on the active
  returns ``r - b`` against a benchmark ``b`` (see each function).
- ``hit_rate``: the share of days with a positive return.

Missing values: a NaN return is a day without an observation and is dropped, by every
function alike, before anything is computed; with a benchmark, a day on which either side is
NaN is dropped. empyrical does the same for the volatility, the Sharpe ratio and
``excess_sharpe`` (``nanmean``/``nanstd``), and for the drawdown it makes no difference (it
counts a NaN as a 0% day, which moves no wealth). Its ``annual_return`` (and so its
``calmar_ratio``) is the exception: it compounds with ``nanprod`` but counts the NaN days in
``n``, as 0% days. Here they are not counted, so that the annualized return and volatility
describe the same days. Infinite returns are an error, not missing.

Too few days: a metric that cannot be computed is NaN, without an exception or a numpy
warning: every metric of an empty (or all-NaN) series, and the volatility and the ratios of a
one-day series. As in empyrical, a single day still has an annualized return
(``(1 + r) ** 252 - 1``), a drawdown (``min(r, 0)``) and so a Calmar ratio. A series whose
values are all equal has no dispersion, and its Sharpe (or information) ratio is
``mean / 0``, i.e. ``+inf`` or ``-inf``, or NaN for a zero mean, as empyrical gives.

Example::

    metrics = summary(net, gross, benchmark, turnover)
    metrics["sharpe"], metrics["gross"]["sharpe"]
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
import numpy.typing as npt

from quarry.exceptions import UsageError

__all__ = [
    "PERIODS_PER_YEAR",
    "BacktestMetrics",
    "ReturnMetrics",
    "annualized_return",
    "annualized_volatility",
    "calmar",
    "excess_annualized_return",
    "hit_rate",
    "information_ratio",
    "max_drawdown",
    "sharpe",
    "summary",
]

PERIODS_PER_YEAR = 252

FloatArray = npt.NDArray[np.float64]


class ReturnMetrics(TypedDict):
    """The metrics of one return series (net or gross of costs) against the benchmark."""

    annualized_return: float
    annualized_volatility: float
    sharpe: float
    max_drawdown: float
    excess_annualized_return: float
    information_ratio: float
    turnover: float
    calmar: float
    hit_rate: float


class BacktestMetrics(ReturnMetrics):
    """The net metrics at the top level, and the same keys before costs under ``gross``."""

    gross: ReturnMetrics


# -- checks -----------------------------------------------------------------------------------


def _series(values: npt.ArrayLike, what: str) -> FloatArray:
    """``values`` as a 1-D float array, NaN kept; anything else is a ``UsageError``."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} must be numbers, not {values!r:.60}: {exc}") from None
    if array.ndim != 1:
        raise UsageError(f"{what} must be one-dimensional (one value a day), not {array.shape}")
    bad = np.flatnonzero(np.isinf(array))
    if bad.size:
        raise UsageError(
            f"{what} has an infinite value ({array[bad[0]]}) at position {bad[0]}; "
            "a missing day should be NaN"
        )
    return array


def _present(values: npt.ArrayLike, what: str = "returns") -> FloatArray:
    array = _series(values, what)
    return array[~np.isnan(array)]


def _active(returns: npt.ArrayLike, benchmark: npt.ArrayLike) -> FloatArray:
    """``returns - benchmark`` on the days on which both are present."""
    r = _series(returns, "returns")
    b = _series(benchmark, "benchmark")
    if r.shape != b.shape:
        raise UsageError(
            f"returns and benchmark must have one value each per day; they have {r.size} "
            f"and {b.size} values"
        )
    active = r - b
    return active[~np.isnan(active)]


# -- building blocks (on present values) ------------------------------------------------------


def _annualized_return(r: FloatArray, periods: float = PERIODS_PER_YEAR) -> float:
    if r.size == 0:
        return math.nan
    # Overflow gives inf, as in empyrical, but without its warning.
    with np.errstate(over="ignore"):
        growth = np.prod(1.0 + r)
        if growth < 0:  # a return below -100%: no real root
            return math.nan
        return float(growth ** (periods / r.size) - 1.0)


def _std(r: FloatArray) -> float:
    if r.size < 2:
        return math.nan
    # Equal values have no dispersion, but the mean they are centred on can differ from them
    # in the last bit and leave a residue near 1e-18; empyrical sets that to 0, and so do we.
    if r.max() == r.min():
        return 0.0
    return float(r.std(ddof=1))


def _ratio(r: FloatArray, periods: float = PERIODS_PER_YEAR) -> float:
    """The annualized mean over standard deviation: +-inf or NaN (0 / 0) without dispersion."""
    std = _std(r)
    if math.isnan(std):
        return math.nan
    mean = float(r.mean())
    if std == 0:
        return math.copysign(math.inf, mean) if mean != 0 else math.nan
    return mean / std * math.sqrt(periods)


def _max_drawdown(r: FloatArray) -> float:
    if r.size == 0:
        return math.nan
    wealth = np.cumprod(np.concatenate(([1.0], 1.0 + r)))
    peak = np.maximum.accumulate(wealth)  # at least the starting 1, never 0
    return float(((wealth - peak) / peak).min())


def _calmar(r: FloatArray, periods: float = PERIODS_PER_YEAR) -> float:
    drawdown = _max_drawdown(r)
    if not drawdown < 0:
        return math.nan
    value = _annualized_return(r, periods) / -drawdown
    return value if math.isfinite(value) else math.nan


def _hit_rate(r: FloatArray) -> float:
    return float((r > 0).mean()) if r.size else math.nan


def _mean(r: FloatArray) -> float:
    return float(r.mean()) if r.size else math.nan


# -- public functions -------------------------------------------------------------------------


def annualized_return(returns: npt.ArrayLike) -> float:
    """The compound annual growth rate: ``prod(1 + r) ** (252 / n) - 1``.

    empyrical's ``annual_return``, over the ``n`` days with a return (NaN days are dropped;
    empyrical counts them as 0% days, see the module's notes). NaN for no days, or when the
    product is negative (a return below -100%).

    Examples
    --------
    >>> round(annualized_return([0.01] * 252), 6)
    11.274002
    """
    return _annualized_return(_present(returns))


def annualized_volatility(returns: npt.ArrayLike) -> float:
    """The standard deviation of daily returns (``ddof=1``) times ``sqrt(252)``.

    empyrical's ``annual_volatility``. NaN with fewer than two days.
    """
    return _std(_present(returns)) * math.sqrt(PERIODS_PER_YEAR)


def sharpe(returns: npt.ArrayLike) -> float:
    """The annualized Sharpe ratio with a risk-free rate of 0: ``mean / std * sqrt(252)``.

    empyrical's ``sharpe_ratio`` (``ddof=1``). NaN with fewer than two days; for a series
    without dispersion ``+inf`` or ``-inf`` by the sign of its mean, NaN if that is 0.
    """
    return _ratio(_present(returns))


def max_drawdown(returns: npt.ArrayLike) -> float:
    """The largest fall of wealth from a previous peak, as a negative fraction.

    Wealth starts at 1 (itself a peak) and compounds the daily returns; the result is the
    minimum of ``wealth / running_peak - 1``, 0 if wealth never falls. empyrical's
    ``max_drawdown``. NaN for no days.

    Examples
    --------
    >>> round(max_drawdown([0.1, -0.5, 0.2]), 6)
    -0.5
    """
    return _max_drawdown(_present(returns))


def calmar(returns: npt.ArrayLike) -> float:
    """The annualized return over the size of the maximum drawdown.

    empyrical's ``calmar_ratio``: NaN when there is no drawdown (or no days), or when the
    ratio is infinite.
    """
    return _calmar(_present(returns))


def excess_annualized_return(returns: npt.ArrayLike, benchmark: npt.ArrayLike) -> float:
    """The annualized return of the active returns ``r - b``, compounded as a series.

    ``prod(1 + r - b) ** (252 / n) - 1`` over the days on which both are present: the growth
    of a portfolio long the strategy and short the benchmark, rebalanced daily. It is not the
    difference of the two annualized returns, which differs by the cross term of compounding.
    empyrical has no function for it; the tests check it as ``annual_return(r - b)``.

    Qlib's ``risk_analysis`` instead reports the arithmetic ``mean(r - b) * 252``; that
    ignores compounding, and is larger by about half the active variance a year.

    Parameters
    ----------
    returns, benchmark
        Daily simple returns, one each per day; NaN for a missing day.
    """
    return _annualized_return(_active(returns, benchmark))


def information_ratio(returns: npt.ArrayLike, benchmark: npt.ArrayLike) -> float:
    """The annualized information ratio: ``mean(r - b) / std(r - b) * sqrt(252)``.

    ``std`` has ``ddof=1``; days on which either side is NaN are dropped. This is empyrical's
    ``excess_sharpe(r, b) * sqrt(252)``: ``excess_sharpe`` is the same ratio of daily means
    and is not annualized. NaN with fewer than two days; an active return without dispersion
    gives ``+inf`` or ``-inf`` (NaN if it is 0), as ``excess_sharpe`` does.
    """
    return _ratio(_active(returns, benchmark))


def hit_rate(returns: npt.ArrayLike) -> float:
    """The share of days with a positive return (above 0, not at it), among present days.

    NaN for no days.
    """
    return _hit_rate(_present(returns))


def _metrics(r: FloatArray, b: FloatArray, mean_turnover: float, periods: float) -> ReturnMetrics:
    present = r[~np.isnan(r)]
    active = (r - b)[~np.isnan(r - b)]
    return {
        "annualized_return": _annualized_return(present, periods),
        "annualized_volatility": _std(present) * math.sqrt(periods),
        "sharpe": _ratio(present, periods),
        "max_drawdown": _max_drawdown(present),
        "excess_annualized_return": _annualized_return(active, periods),
        "information_ratio": _ratio(active, periods),
        "turnover": mean_turnover,
        "calmar": _calmar(present, periods),
        "hit_rate": _hit_rate(present),
    }


def summary(
    net: npt.ArrayLike,
    gross: npt.ArrayLike,
    benchmark: npt.ArrayLike,
    turnover: npt.ArrayLike,
    periods_per_year: float = PERIODS_PER_YEAR,
) -> BacktestMetrics:
    """Every metric of a backtest, shaped as its ``metrics.json``.

    Parameters
    ----------
    net, gross
        Daily returns after and before trading costs.
    benchmark
        The benchmark's daily returns, on the same days.
    turnover
        Daily turnover; its mean over the days with a value is reported (NaN for none).
        Costs do not change it, so ``gross`` repeats it.
    periods_per_year
        Returns a year: 252 days, or for intraday bars 252 times the bars of a session.

    Returns
    -------
    BacktestMetrics
        A plain dict: ``annualized_return``, ``annualized_volatility``, ``sharpe``,
        ``max_drawdown``, ``excess_annualized_return``, ``information_ratio``, ``turnover``,
        ``calmar``, ``hit_rate`` on the net returns, and ``gross``, a dict of the same keys on
        the gross returns. Values are floats; one that cannot be computed is NaN.

    Raises
    ------
    UsageError
        A series is not one-dimensional, has an infinite value, or the three return series
        differ in length.
    """
    n = _series(net, "net returns")
    g = _series(gross, "gross returns")
    b = _series(benchmark, "benchmark")
    if not n.size == g.size == b.size:
        raise UsageError(
            "net returns, gross returns and benchmark must have one value each per day; they "
            f"have {n.size}, {g.size} and {b.size} values"
        )
    mean_turnover = _mean(_present(turnover, "turnover"))
    net_metrics = _metrics(n, b, mean_turnover, periods_per_year)
    return {**net_metrics, "gross": _metrics(g, b, mean_turnover, periods_per_year)}
