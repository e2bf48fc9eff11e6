"""The optimizer's settings (``OptimizerConfig``), apart from the optimizer: a command checks
them, and a backtest of another strategy states it has none, without importing cvxpy."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from quarry.exceptions import UsageError

__all__ = ["SOLVERS", "STATUSES", "OptimizerConfig"]

SOLVERS = ("clarabel", "osqp")
# the risk models the optimizer knows (fitted in ``_risk``)
RISK_MODELS = ("ledoit-wolf", "factor")
STATUSES = ("optimal", "relaxed-turnover", "relaxed-industry", "held")


def _flag(name: str) -> str:
    if name == "long_only":  # the command line asks the other way round
        return "--dollar-neutral"
    return "--" + name.replace("_", "-")


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True)
class OptimizerConfig:
    """How the optimizer builds each rebalance; every field is checked when it is made.

    Parameters
    ----------
    risk_aversion : float, default 1.0
        ``lambda`` in ``alpha @ w - lambda * w' Sigma w``, with ``Sigma`` in daily variance.
        ``optimize_weights`` scales alpha so that a one-standard-deviation score is worth the
        median name's daily volatility (see there). With daily volatilities near 2%, the weight
        bounds decide the book up to about 100; from there risk spreads it over more names,
        and by 10,000 it is close to the least risky book.
    long_only : bool, default True
        True: ``w >= 0`` and ``sum(w) == gross_leverage``. False: dollar-neutral,
        ``sum(w) == 0`` and ``sum(|w|) <= gross_leverage``.
    max_weight : float, default 0.05
        The largest ``|w_i|``, a share in (0, 1].
    industry_bound : float or None, default 0.05
        Each industry's weight stays within this of the benchmark's (0 for dollar-neutral);
        None: no industry constraint.
    turnover_limit : float or None, default None
        The most ``sum(|w - w_previous|)`` per rebalance; None: no limit. The first rebalance
        (no previous target) builds the book without it.
    gross_leverage : float, default 1.0
        Long-only: the share invested. Dollar-neutral: the most ``sum(|w|)``.
    risk_model : {"ledoit-wolf", "factor"}, default "ledoit-wolf"
        Ledoit-Wolf shrunk covariance, or a statistical (PCA) factor model.
    n_factors : int, default 10
        Factors of the ``"factor"`` model.
    lookback : int, default 120
        Trading days of trailing returns the risk model is fitted on, 2 or more.
    min_history : float, default 0.5
        Share of the lookback a name needs returns on to be held, in (0, 1].
    solver : {"clarabel", "osqp"}, default "clarabel"
        The QP solver cvxpy calls.
    rebalance_every : int, default 1
        Trading days between rebalances.
    """

    risk_aversion: float = 1.0
    long_only: bool = True
    max_weight: float = 0.05
    industry_bound: float | None = 0.05
    turnover_limit: float | None = None
    gross_leverage: float = 1.0
    risk_model: str = "ledoit-wolf"
    n_factors: int = 10
    lookback: int = 120
    min_history: float = 0.5
    solver: str = "clarabel"
    rebalance_every: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_field(f.name, getattr(self, f.name))


# name -> (accepts None, kind, check, what to give)
_CHECKS: dict[str, tuple[bool, str, Callable[[Any], bool], str]] = {
    "risk_aversion": (False, "number", lambda v: v > 0, "give a positive number"),
    "long_only": (False, "bool", lambda v: True, "give on (dollar-neutral) or off"),
    "max_weight": (False, "number", lambda v: 0 < v <= 1, "give a share in (0, 1]"),
    "industry_bound": (True, "number", lambda v: v >= 0, "give 0 or more, or none"),
    "turnover_limit": (True, "number", lambda v: v >= 0, "give 0 or more, or none"),
    "gross_leverage": (False, "number", lambda v: v > 0, "give a positive number"),
    "risk_model": (False, "str", lambda v: v in RISK_MODELS, "choose " + ", ".join(RISK_MODELS)),
    "n_factors": (False, "int", lambda v: v >= 1, "give a whole number, 1 or more"),
    "lookback": (False, "int", lambda v: v >= 2, "give a whole number of days, 2 or more"),
    "min_history": (False, "number", lambda v: 0 < v <= 1, "give a share in (0, 1]"),
    "solver": (False, "str", lambda v: v in SOLVERS, "choose " + ", ".join(SOLVERS)),
    "rebalance_every": (False, "int", lambda v: v >= 1, "give a whole number of days, 1 or more"),
}


def _check_field(name: str, value: object) -> None:
    optional, kind, ok, advice = _CHECKS[name]
    if value is None and optional:
        return
    typed = {
        "number": _is_number(value),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "str": isinstance(value, str),
    }[kind]
    if not typed or not ok(value):
        raise UsageError(f"{_flag(name)} {value!r}: {advice}")
