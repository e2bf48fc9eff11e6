"""Mean-variance portfolio optimization, one rebalance at a time, with an explicit fallback.

The model
---------
Each rebalance solves the quadratic program::

    maximize    alpha @ w - risk_aversion * w' Sigma w
    subject to  long-only:      0 <= w_i <= max_weight,            sum(w) == gross_leverage
                dollar-neutral: -max_weight <= w_i <= max_weight,  sum(w) == 0,
                                sum(|w|) <= gross_leverage
                industries:     |sum_{i in g} w_i - b_g| <= industry_bound for each industry g
                turnover:       sum(|w - w_previous|) <= turnover_limit

with ``Sigma = B B' + diag(d)`` from a risk model (``quarry.portfolio._risk``) written through an
auxiliary ``y = B' w`` as ``|y|^2 + sum(d w^2)``: the problem holds ``n k`` numbers, not ``n^2``,
and a factorization costs about ``n k^2``. (Ledoit-Wolf has one factor per day of the window,
so it is the slower model; a 10-factor model solves several times faster.) It runs in cvxpy
with Clarabel (interior point, the default) or OSQP (ADMM).

A long-only book invests exactly ``gross_leverage``: 1 is fully invested, less holds the rest
in cash, more borrows. Its industry targets are the benchmark's industry weights times
``gross_leverage`` (a benchmark of the book's size); a dollar-neutral book's targets are 0.

The fallback policy
-------------------
When a solve fails (infeasible, or the solver errs, or its answer breaks a constraint by more
than ``1e-5``), the rebalance is retried with less, in this order, and the ``status`` says which
answer was kept:

1. ``optimal``: every constraint held.
2. ``relaxed-turnover``: solved without the turnover limit.
3. ``relaxed-industry``: solved without the turnover limit and without the industry bounds.
4. ``held``: no solve succeeded; the previous weights are kept (all cash when there are none).

A step is skipped when it would drop nothing (no turnover limit, no industry bound). ``detail``
records each failed attempt with the solver's status text. Nothing is dropped silently.

The point-in-time rule
----------------------
``optimize_weights``'s target for day ``t`` reads the scores of day ``t`` and the returns of days
``t - lookback + 1`` to ``t`` (the return of day ``t`` is known at its close), never a later row.
A name is eligible on day ``t`` when it has a score that day and a return on at least
``min_history`` of the window's days (at least 2). The backtest trades the target on day
``t + 1``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import cvxpy as cp
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

# cvxpy's atoms from the modules that define them: ``cvxpy`` re-exports them through a star
# import, which mypy --strict does not follow.
from cvxpy.atoms.affine.sum import sum as cvx_sum
from cvxpy.atoms.norm1 import norm1
from cvxpy.atoms.quad_form import quad_form
from cvxpy.atoms.sum_squares import sum_squares

from quarry.exceptions import UsageError
from quarry.portfolio._config import SOLVERS, STATUSES, OptimizerConfig
from quarry.portfolio._risk import RiskModel, fit_risk

__all__ = [
    "SOLVERS",
    "STATUSES",
    "DayResult",
    "Decision",
    "Optimized",
    "OptimizerConfig",
    "optimize_day",
    "optimize_weights",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# A solver's answer counts only if it keeps every constraint to this, in weight units (a
# thousandth of a percent of the book): OSQP stops at 1e-6 and an unpolished answer can miss
# a bound by a little more.
_TOL = 1e-5
# An interior-point solver leaves a name it does not want at ~1e-10, not 0; below this a
# weight is set to 0, or a backtest would trade dust in every name.
_DUST = 1e-9
# Clarabel with QDLDL, which factors these KKT systems (a dense n x k block from the
# factors) about twice as fast as its default. OSQP to 1e-6 and then polished: the polish step
# solves the active set exactly (to ~1e-9 here), where asking ADMM itself for 1e-9 can take
# 100,000s of iterations. A fixed rho update interval keeps OSQP deterministic (its default
# adapts to measured time); 50 iterations stalled least on 300-name problems.
_SOLVER_OPTIONS: dict[str, dict[str, Any]] = {
    "clarabel": {"direct_solve_method": "qdldl"},
    "osqp": {
        "eps_abs": 1e-6,
        "eps_rel": 1e-6,
        "max_iter": 100_000,
        "polishing": True,
        "adaptive_rho_interval": 50,
    },
}


@dataclass(frozen=True, eq=False)  # arrays: == would be elementwise
class DayResult:
    """One rebalance: the weights, the fallback status (one of ``STATUSES``) and why."""

    weights: FloatArray
    status: str
    detail: str


class Decision(NamedTuple):
    """What one rebalance of ``optimize_weights`` decided."""

    day: int
    status: str
    detail: str


@dataclass(frozen=True, eq=False)  # arrays: == would be elementwise
class Optimized:
    """Targets over days x names and the decision of each rebalance.

    ``weights`` is NaN on every row that is not a rebalance (no new target: hold), which
    includes the days before any name has enough history.
    """

    weights: FloatArray
    decisions: list[Decision]


@dataclass(frozen=True)
class _Problem:
    """One rebalance over its n eligible names, before any constraint is dropped."""

    alpha: FloatArray
    risk: RiskModel
    groups: IntArray | None  # industry index per name in 0..G-1, or -1
    targets: FloatArray | None  # (G,) the industries' target weights
    previous: FloatArray | None
    turnover_budget: float | None  # what the turnover limit leaves for these names


def _solve(
    problem: _Problem, config: OptimizerConfig, *, turnover: bool, industry: bool
) -> tuple[FloatArray | None, str]:
    """Solve once; the weights, or None and why not."""
    n = problem.alpha.size
    risk = problem.risk
    # Rescale so the median name has unit variance: the argmax is unchanged and the solver's
    # absolute tolerances act on numbers of order 1 instead of 1e-4.
    scale = float(np.median(risk.diagonal()))
    scale = scale if scale > 0 else 1.0
    w = cp.Variable(n)
    y = cp.Variable(risk.exposures.shape[1])
    # The specific part as a diagonal quadratic form: cvxpy hands it to the solver as is,
    # where sum_squares(multiply(...)) would add n auxiliary variables.
    penalty = sum_squares(y) + quad_form(w, sp.diags(risk.specific / scale), assume_PSD=True)
    objective = cp.Maximize((problem.alpha / scale) @ w - config.risk_aversion * penalty)
    mw, lev = config.max_weight, config.gross_leverage
    cons = [y == (risk.exposures / np.sqrt(scale)).T @ w, w <= mw]
    if config.long_only:
        cons += [w >= 0, cvx_sum(w) == lev]
    else:
        cons += [w >= -mw, cvx_sum(w) == 0, norm1(w) <= lev]
    matrix = _industry_matrix(problem) if industry else None
    if matrix is not None:
        assert problem.targets is not None and config.industry_bound is not None
        exposure = matrix @ w - problem.targets
        cons += [exposure <= config.industry_bound, exposure >= -config.industry_bound]
    if turnover:
        assert problem.previous is not None and problem.turnover_budget is not None
        if problem.turnover_budget < 0:
            return None, "selling the names no longer eligible trades more than the limit"
        cons.append(norm1(w - problem.previous) <= problem.turnover_budget)
    prob = cp.Problem(objective, cons)
    name = config.solver
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            solve: Callable[..., object] = prob.solve  # untyped in cvxpy
            solve(solver=name.upper(), **_SOLVER_OPTIONS[name])
        except cp.error.SolverError as exc:
            return None, f"{name} failed ({exc})"
    if prob.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or w.value is None:
        return None, f"{name} {prob.status}"
    weights = _clean(np.asarray(w.value, dtype=np.float64), config)
    broken = _broken(weights, problem, config, matrix, turnover=turnover)
    if broken:
        return None, f"{name} {prob.status} but {broken}"
    note = f"{name} {prob.status}"
    said = [str(c.message) for c in caught if issubclass(c.category, UserWarning)]  # cvxpy's
    if said:
        note += " (" + "; ".join(said) + ")"
    return weights, note


def _industry_matrix(problem: _Problem) -> sp.csr_matrix | None:
    if problem.groups is None or problem.targets is None or problem.targets.size == 0:
        return None
    n, g = problem.groups.size, problem.targets.size
    member = np.flatnonzero(problem.groups >= 0)
    return sp.csr_matrix(
        (np.ones(member.size), (problem.groups[member], member)), shape=(g, n), dtype=np.float64
    )


def _clean(w: FloatArray, config: OptimizerConfig) -> FloatArray:
    """Zero the dust, clip to the weight bounds and never exceed the gross leverage: the
    backtest rejects a target even 1e-9 over its leverage."""
    w = np.where(np.abs(w) < _DUST, 0.0, w)
    lower = 0.0 if config.long_only else -config.max_weight
    w = np.clip(w, lower, config.max_weight)
    gross = float(np.abs(w).sum())
    if gross > config.gross_leverage:
        w *= config.gross_leverage / gross
    return w


def _broken(
    w: FloatArray,
    problem: _Problem,
    config: OptimizerConfig,
    matrix: sp.csr_matrix | None,
    *,
    turnover: bool,
) -> str:
    """The worst constraint the weights break by more than _TOL, or ''."""
    budget = config.gross_leverage if config.long_only else 0.0
    misses = {"the budget": abs(float(w.sum()) - budget)}
    if not config.long_only:
        misses["the gross leverage"] = float(np.abs(w).sum()) - config.gross_leverage
    if matrix is not None:
        assert problem.targets is not None and config.industry_bound is not None
        gap = np.abs(matrix @ w - problem.targets) - config.industry_bound
        misses["an industry bound"] = float(gap.max())
    if turnover:
        assert problem.previous is not None and problem.turnover_budget is not None
        used = float(np.abs(w - problem.previous).sum())
        misses["the turnover limit"] = used - problem.turnover_budget
    what, miss = max(misses.items(), key=lambda kv: kv[1])
    return f"misses {what} by {miss:.1e}" if miss > _TOL else ""


def _decide(problem: _Problem, config: OptimizerConfig, held: FloatArray) -> DayResult:
    """Run the fallback policy: the first attempt that solves decides the status."""
    has_turnover = problem.turnover_budget is not None
    has_industry = _industry_matrix(problem) is not None
    attempts = [("optimal", has_turnover, has_industry, "with every constraint")]
    if has_turnover:
        attempts.append(("relaxed-turnover", False, has_industry, "without the turnover limit"))
    if has_industry:
        attempts.append(("relaxed-industry", False, False, "without the industry bounds"))
    failures: list[str] = []
    for status, turnover, industry, label in attempts:
        weights, note = _solve(problem, config, turnover=turnover, industry=industry)
        if weights is not None:
            said = f"{problem.alpha.size} names, {note}"
            return DayResult(weights, status, "; ".join([*failures, said]))
        failures.append(f"{label}: {note}")
    kept = "kept the previous weights" if problem.previous is not None else "held cash"
    return DayResult(held, "held", "; ".join([*failures, f"no solve succeeded, {kept}"]))


def _vector(value: npt.ArrayLike, name: str, n: int, dtype: type = np.float64) -> Any:
    arr: npt.NDArray[Any] = np.asarray(value, dtype=dtype)
    if arr.shape != (n,):
        raise UsageError(f"{name} has shape {arr.shape}; alpha has {n} names, pass one a name")
    return arr


def optimize_day(
    alpha: npt.ArrayLike,
    risk: RiskModel,
    *,
    config: OptimizerConfig | None = None,
    benchmark: npt.ArrayLike | None = None,
    industries: npt.ArrayLike | None = None,
    previous: npt.ArrayLike | None = None,
) -> DayResult:
    """One rebalance: maximize ``alpha @ w - risk_aversion * w' Sigma w`` under the config's
    constraints, falling back as the module docstring says.

    Parameters
    ----------
    alpha : array of float, shape (n,)
        Expected return of each name over the holding period, in the units of ``risk``.
    risk : RiskModel
        The covariance of the same n names.
    config : OptimizerConfig, optional
        The constraints and solver; the defaults when omitted.
    benchmark : array of float, shape (n,), optional
        Benchmark weights (summing to 1) the long-only industry bounds are measured against;
        default equal weights. Ignored when dollar-neutral (the targets are 0).
    industries : array of int, shape (n,), optional
        Each name's industry code, -1 for none; without it there is no industry constraint.
    previous : array of float, shape (n,), optional
        The weights held now: the turnover limit applies to them, and they are kept if nothing
        solves. Without them there is no turnover limit and the fallback holds cash.

    Returns
    -------
    DayResult
        ``weights`` (n,), ``status`` (one of ``STATUSES``) and ``detail``.

    Examples
    --------
    >>> import numpy as np
    >>> from quarry.portfolio._risk import RiskModel
    >>> risk = RiskModel(np.zeros((3, 1)), np.full(3, 1e-4))
    >>> cfg = OptimizerConfig(max_weight=0.6, industry_bound=None)
    >>> result = optimize_day(np.array([2e-4, 1e-4, 0.0]), risk, config=cfg)
    >>> result.status, np.round(result.weights, 6).tolist()
    ('optimal', [0.6, 0.4, 0.0])
    """
    config = config or OptimizerConfig()
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 1 or not np.isfinite(a).all():
        raise UsageError("alpha must be one finite number a name (a 1-D array without NaN)")
    n = a.size
    if risk.n != n:
        raise UsageError(f"the risk model covers {risk.n} names, alpha {n}")
    groups, targets = None, None
    if industries is not None and config.industry_bound is not None:
        codes = _vector(industries, "industries", n, np.int64)
        if config.long_only:
            bench = np.full(n, 1.0 / n) if benchmark is None else _vector(benchmark, "benchmark", n)
        else:
            bench = np.zeros(n)
        groups, targets = _groups(codes, bench, config)
    prev = None if previous is None else _vector(previous, "previous", n).copy()
    budget = config.turnover_limit if prev is not None else None
    problem = _Problem(a, risk, groups, targets, prev, budget)
    return _decide(problem, config, prev if prev is not None else np.zeros(n))


def _groups(
    codes: IntArray, bench: FloatArray, config: OptimizerConfig, held: IntArray | None = None
) -> tuple[IntArray, FloatArray]:
    """Industry index per held name and each industry's target weight.

    ``codes`` and ``bench`` cover the whole universe; ``held`` picks the names the optimizer
    may hold (all when None). Every industry with a held name or benchmark weight gets a
    constraint: one the book cannot hold is still measured against the benchmark.
    """
    bench = np.nan_to_num(bench)
    inside = codes >= 0
    mask = inside & (bench != 0)
    if held is not None:
        mask[held] |= inside[held]
    else:
        mask |= inside
    present, index = np.unique(codes[mask], return_inverse=True)
    targets = np.zeros(present.size)
    np.add.at(targets, index, bench[mask])
    if config.long_only:
        targets *= config.gross_leverage
    chosen = codes if held is None else codes[held]
    # every code >= 0 among the held names is in ``present``
    groups = np.where(chosen >= 0, np.searchsorted(present, chosen), -1).astype(np.int64)
    return groups, targets


def _panel(value: npt.ArrayLike, name: str, shape: tuple[int, int], dtype: type) -> Any:
    arr = np.asarray(value)
    if arr.shape != shape:
        raise UsageError(f"{name} has shape {arr.shape} but scores has {shape}; pass days x names")
    if dtype is np.int64 and not np.issubdtype(arr.dtype, np.integer):
        raise UsageError(f"{name} must be integer industry codes (-1 for none), not {arr.dtype}")
    return arr.astype(dtype)


def optimize_weights(
    scores: npt.ArrayLike,
    returns: npt.ArrayLike,
    *,
    config: OptimizerConfig | None = None,
    industries: npt.ArrayLike | None = None,
    benchmark: npt.ArrayLike | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Optimized:
    """Optimized target weights over days, point-in-time, one rebalance every
    ``rebalance_every`` days from the first day a name is eligible.

    On a rebalance day ``t`` the eligible names are those with a score on day ``t`` and
    returns on at least ``min_history * lookback`` (and 2) of days ``t - lookback + 1 .. t``.
    The risk model (``fit_risk``) is fitted on that window for them, and their alpha is the
    day's cross-sectional z-score of the scores times the median eligible name's daily
    volatility under the risk model, Grinold's ``alpha = IC * volatility * score`` with the
    information coefficient left to ``risk_aversion``. All scores equal: alpha is 0 and the
    book is the least risky one. The previous weights are the last target; a name that is no
    longer eligible is sold, and its sale counts against the turnover limit.

    Parameters
    ----------
    scores : array of float, shape (days, n)
        The signal, known at day t's close; NaN where a name has no score.
    returns : array of float, shape (days, n)
        Each name's return over day t (close t-1 to close t); NaN where missing.
    config : OptimizerConfig, optional
        The optimizer's settings; the defaults when omitted.
    industries : array of int, shape (days, n), optional
        Industry codes per day, -1 for none; without them there is no industry constraint.
    benchmark : array of float, shape (days, n), optional
        Benchmark weights per day (NaN as 0); default equal weights over the names with a
        score that day.
    progress : callable, optional
        Called as ``progress(done, total)`` after each rebalance.

    Returns
    -------
    Optimized
        ``weights``: the targets, NaN on rows that are not rebalances. ``decisions``: one
        ``Decision(day, status, detail)`` per rebalance.
    """
    config = config or OptimizerConfig()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise UsageError(f"scores must be days x names, a 2-D array; got shape {s.shape}")
    shape = (s.shape[0], s.shape[1])
    r = _panel(returns, "returns", shape, np.float64)
    codes = None if industries is None else _panel(industries, "industries", shape, np.int64)
    bench = None if benchmark is None else _panel(benchmark, "benchmark", shape, np.float64)

    days, n = shape
    lookback = config.lookback
    need = max(2, math.ceil(config.min_history * lookback - 1e-9))
    # count[t, i]: returns name i has on days t - lookback + 1 .. t
    csum = np.concatenate([np.zeros((1, n), np.int64), np.cumsum(np.isfinite(r), axis=0)])
    start = np.maximum(np.arange(days) - lookback + 1, 0)
    count = csum[1:] - csum[start]
    eligible = np.isfinite(s) & (count >= need)
    any_eligible = np.flatnonzero(eligible.any(axis=1))
    out = np.full(shape, np.nan)
    decisions: list[Decision] = []
    if any_eligible.size == 0:
        return Optimized(out, decisions)
    schedule = range(int(any_eligible[0]), days, config.rebalance_every)
    last: FloatArray | None = None  # the last target; None until one was solved
    for done, t in enumerate(schedule, start=1):
        held = last if last is not None else np.zeros(n)
        names = np.flatnonzero(eligible[t])
        if names.size == 0:
            result = DayResult(
                held, "held", f"no name has a score and {need} returns in the window"
            )
        else:
            problem = _day_problem(t, names, s, r, codes, bench, last, config)
            result = _decide(problem, config, held[names])
            if result.status != "held":
                row = np.zeros(n)
                row[names] = result.weights
                result = DayResult(row, result.status, result.detail)
            else:
                result = DayResult(held, result.status, result.detail)
        if last is None and config.turnover_limit is not None and result.status != "held":
            result = DayResult(
                result.weights, result.status, result.detail + "; first rebalance, no turnover"
            )
        out[t] = result.weights
        if last is not None or result.status != "held":
            last = result.weights  # after holding cash, the next rebalance builds the book
        decisions.append(Decision(t, result.status, result.detail))
        if progress is not None:
            progress(done, len(schedule))
    return Optimized(out, decisions)


def _day_problem(
    t: int,
    names: IntArray,
    s: FloatArray,
    r: FloatArray,
    codes: IntArray | None,
    bench: FloatArray | None,
    last: FloatArray | None,
    config: OptimizerConfig,
) -> _Problem:
    """Day t's problem over its eligible names, from rows up to t only."""
    window = r[max(t - config.lookback + 1, 0) : t + 1, names]
    risk = fit_risk(window, config.risk_model, config.n_factors)
    score = s[t, names]
    spread = float(score.std())
    z = (score - score.mean()) / spread if spread > 0 else np.zeros(names.size)
    alpha = z * float(np.median(np.sqrt(risk.diagonal())))
    groups, targets = None, None
    if codes is not None and config.industry_bound is not None:
        if not config.long_only:
            weights = np.zeros(s.shape[1])
        elif bench is not None:
            weights = bench[t]
        else:
            has = np.isfinite(s[t])
            weights = has / has.sum()
        groups, targets = _groups(codes[t], weights, config, held=names)
    previous, budget = None, None
    if last is not None:
        previous = last[names]
        if config.turnover_limit is not None:
            # Names that left the universe are sold; what that trades comes off the limit.
            gone = np.ones(s.shape[1], dtype=bool)
            gone[names] = False
            budget = config.turnover_limit - float(np.abs(last[gone]).sum())
    return _Problem(alpha, risk, groups, targets, previous, budget)
