"""The optimizer against closed forms, scipy's SLSQP, its own fallback policy and the calendar."""

from __future__ import annotations

from typing import Any

import cvxpy as cp
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import zscore

from quarry.exceptions import UsageError
from quarry.portfolio import _optimizer as optimizer
from quarry.portfolio._optimizer import OptimizerConfig, optimize_day, optimize_weights
from quarry.portfolio._risk import RiskModel, fit_risk

TOL = 1e-7  # what Clarabel's weights may break a constraint by (the optimizer allows 1e-5)


def risk_model(n: int, seed: int = 0) -> RiskModel:
    rng = np.random.default_rng(seed)
    return RiskModel(rng.normal(size=(n, 2)) * 0.01, rng.uniform(1e-4, 3e-4, n))


def alpha(n: int, seed: int = 0, size: float = 0.02) -> np.ndarray:
    return np.random.default_rng(seed + 100).normal(size=n) * size


def slsqp(
    a: np.ndarray,
    cov: np.ndarray,
    lam: float,
    *,
    lower: float,
    upper: float,
    budget: float,
    gross: float | None = None,
    members: np.ndarray | None = None,
    targets: np.ndarray | None = None,
    band: float | None = None,
    previous: np.ndarray | None = None,
    turnover: float | None = None,
) -> np.ndarray:
    """The same QP by scipy's SLSQP, written independently. An absolute value is split the
    textbook way: ``w = w+ - w-`` for the gross leverage, ``w = previous + buy - sell`` for the
    turnover, the parts nonnegative and their sum limited (one of the two at a time)."""
    n = a.size
    scale = np.median(np.diag(cov))  # the objective near 1, where SLSQP's ftol means something
    s, q = cov / scale, a / scale
    split = gross is not None or turnover is not None
    assert not (gross is not None and turnover is not None)
    base = previous if turnover is not None and previous is not None else np.zeros(n)
    m = np.hstack([np.eye(n), -np.eye(n)]) if split else np.eye(n)  # w = base + m @ x

    def weights(x: np.ndarray) -> np.ndarray:
        return np.asarray(base + m @ x)

    ineq_rows, ineq_consts = [], []  # rows @ x + consts >= 0
    if split:
        limit = gross if gross is not None else turnover
        assert limit is not None
        ineq_rows += [-np.ones((1, 2 * n)), m, -m]
        ineq_consts += [np.array([limit]), base - lower, upper - base]
    if members is not None and targets is not None and band is not None:
        ineq_rows += [-members @ m, members @ m]
        centre = targets - members @ base
        ineq_consts += [band + centre, band - centre]
    constraints: list[dict[str, Any]] = [
        {
            "type": "eq",
            "fun": lambda x: np.array([weights(x).sum() - budget]),
            "jac": lambda x: m.sum(axis=0, keepdims=True),
        }
    ]
    if ineq_rows:
        rows, consts = np.vstack(ineq_rows), np.concatenate(ineq_consts)
        constraints.append(
            {"type": "ineq", "fun": lambda x: rows @ x + consts, "jac": lambda x: rows}
        )
    result = minimize(
        lambda x: float(lam * weights(x) @ s @ weights(x) - q @ weights(x)),
        np.zeros(m.shape[1]) if split else np.full(n, budget / n),
        jac=lambda x: m.T @ (2 * lam * s @ weights(x) - q),
        bounds=[(0.0, None)] * (2 * n) if split else [(lower, upper)] * n,
        constraints=constraints,
        method="SLSQP",
        options={"ftol": 1e-8, "maxiter": 2000},
    )
    assert result.success, result.message
    return weights(result.x)


def one_hot(codes: np.ndarray) -> np.ndarray:
    return (codes[None, :] == np.arange(codes.max() + 1)[:, None]).astype(float)


# --- closed forms -------------------------------------------------------------------------


def test_dollar_neutral_is_the_lagrange_solution() -> None:
    n, lam = 8, 500.0
    risk, a = risk_model(n), alpha(n)
    cov = risk.covariance()
    # max a'w - lam w'Sw subject to 1'w = 0: w = S^-1 (a - nu 1) / (2 lam), nu making 1'w = 0
    inv_a, inv_1 = np.linalg.solve(cov, a), np.linalg.solve(cov, np.ones(n))
    expected = (inv_a - inv_1 * inv_a.sum() / inv_1.sum()) / (2 * lam)
    assert np.abs(expected).max() < 1 and np.abs(expected).sum() < 100  # no bound binds
    cfg = OptimizerConfig(
        risk_aversion=lam, long_only=False, max_weight=1.0, industry_bound=None, gross_leverage=100
    )
    result = optimize_day(a, risk, config=cfg)
    assert result.status == "optimal"
    np.testing.assert_allclose(result.weights, expected, atol=1e-8)


def test_long_only_fully_invested_is_the_lagrange_solution() -> None:
    n, lam = 8, 50.0
    risk, a = risk_model(n, seed=1), alpha(n, seed=1, size=0.0005)
    cov = risk.covariance()
    inv_a, inv_1 = np.linalg.solve(cov, a), np.linalg.solve(cov, np.ones(n))
    nu = (inv_a.sum() - 2 * lam) / inv_1.sum()  # makes 1'w = 1
    expected = (inv_a - nu * inv_1) / (2 * lam)
    assert (expected > 0.01).all() and (expected < 0.5).all()  # no bound binds
    cfg = OptimizerConfig(risk_aversion=lam, max_weight=0.5, industry_bound=None)
    np.testing.assert_allclose(optimize_day(a, risk, config=cfg).weights, expected, atol=1e-8)


# --- each constraint binds, and the answer is SLSQP's ---------------------------------------


def test_long_only_max_weight_matches_slsqp() -> None:
    n, lam, cap = 10, 20.0, 0.15
    risk, a = risk_model(n, seed=2), alpha(n, seed=2)
    cfg = OptimizerConfig(risk_aversion=lam, max_weight=cap, industry_bound=None)
    w = optimize_day(a, risk, config=cfg).weights
    assert w.sum() == pytest.approx(1.0, abs=TOL)
    assert w.min() >= 0 and w.max() <= cap
    assert (w > cap - 1e-8).sum() >= 2 and (w == 0).sum() >= 2  # both bounds bind
    reference = slsqp(a, risk.covariance(), lam, lower=0, upper=cap, budget=1.0)
    np.testing.assert_allclose(w, reference, atol=1e-5)


def test_industry_band_binds_and_matches_slsqp() -> None:
    n, lam, band = 12, 20.0, 0.03
    risk = risk_model(n, seed=3)
    codes = np.repeat([0, 1, 2], 4)
    a = alpha(n, seed=3) + np.where(codes == 0, 0.02, 0.0)  # everyone wants industry 0
    bench = np.random.default_rng(3).dirichlet(np.ones(n))
    cfg = OptimizerConfig(risk_aversion=lam, max_weight=0.3, industry_bound=band)
    result = optimize_day(a, risk, config=cfg, benchmark=bench, industries=codes)
    members = one_hot(codes)
    active = members @ result.weights - members @ bench
    assert np.abs(active).max() <= band + TOL
    assert active[0] == pytest.approx(band, abs=1e-7)  # industry 0 at the top of its band
    reference = slsqp(
        a,
        risk.covariance(),
        lam,
        lower=0,
        upper=0.3,
        budget=1.0,
        members=members,
        targets=members @ bench,
        band=band,
    )
    np.testing.assert_allclose(result.weights, reference, atol=1e-5)


def test_long_only_industry_targets_scale_with_the_invested_share() -> None:
    n = 12
    risk, a = risk_model(n, seed=4), alpha(n, seed=4)
    codes = np.repeat([0, 1, 2], 4)
    cfg = OptimizerConfig(risk_aversion=5.0, max_weight=0.3, industry_bound=0.0, gross_leverage=0.6)
    w = optimize_day(a, risk, config=cfg, industries=codes).weights  # equal-weight benchmark
    np.testing.assert_allclose(one_hot(codes) @ w, [0.2, 0.2, 0.2], atol=TOL)


def test_turnover_limit_binds_and_matches_slsqp() -> None:
    n, lam, limit = 10, 20.0, 0.2
    risk, a = risk_model(n, seed=5), alpha(n, seed=5)
    previous = np.full(n, 0.1)
    cfg = OptimizerConfig(risk_aversion=lam, max_weight=0.3, industry_bound=None)
    free = optimize_day(a, risk, config=cfg, previous=previous).weights
    assert np.abs(free - previous).sum() > 2 * limit  # the limit will bind
    limited = OptimizerConfig(
        risk_aversion=lam, max_weight=0.3, industry_bound=None, turnover_limit=limit
    )
    result = optimize_day(a, risk, config=limited, previous=previous)
    assert result.status == "optimal"
    assert np.abs(result.weights - previous).sum() == pytest.approx(limit, abs=1e-7)
    reference = slsqp(
        a,
        risk.covariance(),
        lam,
        lower=0,
        upper=0.3,
        budget=1.0,
        previous=previous,
        turnover=limit,
    )
    np.testing.assert_allclose(result.weights, reference, atol=1e-5)


def test_dollar_neutral_gross_leverage_binds_and_matches_slsqp() -> None:
    n, lam, lev = 10, 5.0, 0.8
    risk, a = risk_model(n, seed=6), alpha(n, seed=6)
    cfg = OptimizerConfig(
        risk_aversion=lam, long_only=False, max_weight=0.3, industry_bound=None, gross_leverage=lev
    )
    w = optimize_day(a, risk, config=cfg).weights
    assert w.sum() == pytest.approx(0.0, abs=TOL)
    assert np.abs(w).sum() <= lev  # exactly: the backtest rejects any excess
    assert np.abs(w).sum() == pytest.approx(lev, abs=1e-7)
    assert np.abs(w).max() <= 0.3
    reference = slsqp(a, risk.covariance(), lam, lower=-0.3, upper=0.3, budget=0.0, gross=lev)
    np.testing.assert_allclose(w, reference, atol=1e-5)


def test_dollar_neutral_industries_are_neutral() -> None:
    n = 12
    risk, a = risk_model(n, seed=7), alpha(n, seed=7) + np.repeat([0.02, 0.0, -0.02], 4)
    codes = np.repeat([0, 1, 2], 4)
    bench = np.full(n, 1 / n)  # ignored: a dollar-neutral book is measured against 0
    cfg = OptimizerConfig(
        risk_aversion=5.0, long_only=False, max_weight=0.2, industry_bound=0.01, gross_leverage=1
    )
    w = optimize_day(a, risk, config=cfg, industries=codes, benchmark=bench).weights
    exposure = one_hot(codes) @ w
    assert np.abs(exposure).max() == pytest.approx(0.01, abs=1e-7)


def test_both_solvers_agree() -> None:
    n = 12
    risk, a = risk_model(n, seed=8), alpha(n, seed=8)
    codes = np.repeat([0, 1, 2], 4)
    previous = np.tile([1 / n, -1 / n], n // 2)  # industry-neutral, as the band asks
    kw: dict[str, Any] = {
        "risk_aversion": 10.0,
        "long_only": False,
        "max_weight": 0.15,
        "industry_bound": 0.02,
        "turnover_limit": 0.5,
        "gross_leverage": 1.0,
    }
    results = [
        optimize_day(
            a, risk, config=OptimizerConfig(solver=s, **kw), industries=codes, previous=previous
        )
        for s in ("clarabel", "osqp")
    ]
    assert [r.status for r in results] == ["optimal", "optimal"]
    assert "osqp" in results[1].detail
    np.testing.assert_allclose(results[0].weights, results[1].weights, atol=1e-6)


# --- the fallback policy ----------------------------------------------------------------------


def test_turnover_that_cannot_reach_the_industry_band_is_relaxed() -> None:
    n = 12
    risk, a = risk_model(n, seed=9), alpha(n, seed=9)
    codes = np.repeat([0, 1, 2], 4)
    previous = np.zeros(n)
    previous[:4] = 0.25  # all in industry 0: far outside the band around the benchmark's 1/3
    cfg = OptimizerConfig(max_weight=0.3, industry_bound=0.05, turnover_limit=0.1)
    result = optimize_day(a, risk, config=cfg, industries=codes, previous=previous)
    assert result.status == "relaxed-turnover"
    assert "with every constraint: clarabel infeasible" in result.detail
    w = result.weights
    assert np.abs(one_hot(codes) @ w - 1 / 3).max() <= 0.05 + TOL  # the industries still hold
    assert w.sum() == pytest.approx(1.0, abs=TOL) and 0 <= w.min() and w.max() <= 0.3
    assert np.abs(w - previous).sum() > 0.1


def test_unreachable_industry_weight_is_relaxed() -> None:
    n = 30
    risk, a = risk_model(n, seed=10), alpha(n, seed=10)
    codes = np.zeros(n, dtype=int)
    codes[:2] = 1
    bench = np.full(n, 0.7 / 28)
    bench[:2] = 0.15  # industry 1 is 30% of the benchmark but 2 names can hold only 10%
    cfg = OptimizerConfig(max_weight=0.05, industry_bound=0.1)
    result = optimize_day(a, risk, config=cfg, industries=codes, benchmark=bench)
    assert result.status == "relaxed-industry"
    assert result.detail.startswith("with every constraint: clarabel infeasible")
    w = result.weights
    assert w.sum() == pytest.approx(1.0, abs=TOL) and 0 <= w.min() and w.max() <= 0.05


def test_nothing_solves_holds_the_previous_weights() -> None:
    n = 10
    risk, a = risk_model(n, seed=11), alpha(n, seed=11)
    cfg = OptimizerConfig(max_weight=0.05, industry_bound=None)  # 10 x 5% cannot make 100%
    previous = np.full(n, 0.1)
    held = optimize_day(a, risk, config=cfg, previous=previous)
    assert held.status == "held"
    np.testing.assert_array_equal(held.weights, previous)
    assert "clarabel infeasible" in held.detail and "kept the previous weights" in held.detail
    cash = optimize_day(a, risk, config=cfg)
    assert cash.status == "held" and "held cash" in cash.detail
    np.testing.assert_array_equal(cash.weights, np.zeros(n))


def test_a_solver_error_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: cp.Problem, *args: object, **kwargs: object) -> None:
        raise cp.error.SolverError("numerical trouble")

    monkeypatch.setattr(cp.Problem, "solve", broken)
    n = 6
    cfg = OptimizerConfig(max_weight=0.5, turnover_limit=0.3)
    result = optimize_day(
        alpha(n), risk_model(n), config=cfg, industries=np.zeros(n, int), previous=np.full(n, 1 / n)
    )
    assert result.status == "held"
    assert result.detail.count("clarabel failed (numerical trouble)") == 3  # all three attempts


def test_an_answer_that_breaks_a_constraint_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # as if the solver had stopped short: every answer 0.001 a name too heavy
    monkeypatch.setattr(optimizer, "_clean", lambda w, config: w + 1e-3)
    n = 10
    cfg = OptimizerConfig(max_weight=0.5, industry_bound=None)
    result = optimize_day(alpha(n), risk_model(n), config=cfg)
    assert result.status == "held"
    assert "clarabel optimal but misses the budget by 1.0e-02" in result.detail


# --- over days --------------------------------------------------------------------------------


def panel(days: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    returns = rng.normal(size=(days, n)) * 0.02 + rng.normal(size=(days, 1)) * 0.01
    scores = rng.normal(size=(days, n))
    return scores, returns


def test_calendar_eligibility_and_alpha_scale() -> None:
    days, n = 30, 8
    scores, returns = panel(days, n, seed=1)
    returns[:20, 7] = np.nan  # name 7 lists on day 20: eligible from day 24 (5 of 10 days)
    scores[13, 2] = np.nan
    cfg = OptimizerConfig(
        risk_aversion=2000.0,  # enough that the alpha's scale matters, not only the bounds
        max_weight=0.3,
        industry_bound=None,
        lookback=10,
        min_history=0.5,
        rebalance_every=3,
    )
    ticks: list[tuple[int, int]] = []
    result = optimize_weights(
        scores, returns, config=cfg, progress=lambda done, total: ticks.append((done, total))
    )
    schedule = list(range(4, days, 3))  # day 4 is the first with 5 returns in the window
    assert [d.day for d in result.decisions] == schedule
    assert ticks == [(i + 1, len(schedule)) for i in range(len(schedule))]
    rebalanced = np.isfinite(result.weights).all(axis=1)
    np.testing.assert_array_equal(np.flatnonzero(rebalanced), schedule)
    assert np.isnan(result.weights[~rebalanced]).all()
    w = result.weights[rebalanced]
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=TOL)
    assert (w[np.array(schedule) < 24, 7] == 0).all()
    assert result.weights[13, 2] == 0

    # day 16's target is optimize_day on the documented alpha: the day's z-score times the
    # median name's volatility under the window's risk model
    t = 16
    risk = fit_risk(returns[t - 9 : t + 1, :7], "ledoit-wolf")
    a = zscore(scores[t, :7]) * np.median(np.sqrt(np.diag(risk.covariance())))
    expected = optimize_day(a, risk, config=cfg).weights
    np.testing.assert_allclose(result.weights[t, :7], expected, atol=1e-9)


def test_default_benchmark_is_equal_weight_over_scored_names() -> None:
    days, n = 12, 9
    scores, returns = panel(days, n, seed=2)
    returns[:, 8] = np.nan  # never eligible, but it has a score: it is in the benchmark
    scores[:, 5] = np.nan  # no score: out of the benchmark
    codes = np.tile(np.repeat([0, 1, 2], 3), (days, 1))
    cfg = OptimizerConfig(max_weight=0.5, industry_bound=0.0, lookback=5)
    result = optimize_weights(scores, returns, config=cfg, industries=codes)
    assert {d.status for d in result.decisions} == {"optimal"}
    w = result.weights[-1]
    np.testing.assert_allclose(one_hot(codes[-1]) @ w, [3 / 8, 2 / 8, 3 / 8], atol=TOL)
    assert w[8] == 0 and w[5] == 0


def test_turnover_over_days_counts_sales_of_names_that_left() -> None:
    days, n, limit = 12, 6, 0.6
    scores, returns = panel(days, n, seed=3)
    cfg = OptimizerConfig(
        max_weight=0.4, industry_bound=None, turnover_limit=limit, lookback=5, rebalance_every=2
    )
    base = optimize_weights(scores, returns, config=cfg)
    first, *rest = base.decisions
    assert first.status == "optimal" and first.detail.endswith("first rebalance, no turnover")
    targets = base.weights[[d.day for d in base.decisions]]
    traded = np.abs(np.diff(targets, axis=0)).sum(axis=1)
    assert (traded <= limit + TOL).all()
    assert traded.max() == pytest.approx(limit, abs=1e-7)  # random scores: the limit binds

    # The largest holding loses its score. Selling it and buying its weight back elsewhere
    # trades twice its weight, more than the limit; the sale alone would fit.
    day = rest[0].day
    big = int(np.argmax(base.weights[first.day]))
    assert limit / 2 < base.weights[first.day, big] <= limit
    scores[day, big] = np.nan
    result = optimize_weights(scores, returns, config=cfg)
    decision = result.decisions[1]
    assert decision.status == "relaxed-turnover"
    assert decision.detail.startswith("with every constraint: clarabel infeasible")
    assert result.weights[day, big] == 0
    assert np.abs(result.weights[day] - result.weights[first.day]).sum() > limit

    # a limit below the sale itself: said so, without asking the solver
    lower = base.weights[first.day, big] * 0.9
    cfg = OptimizerConfig(
        max_weight=0.4, industry_bound=None, turnover_limit=lower, lookback=5, rebalance_every=2
    )
    decision = optimize_weights(scores, returns, config=cfg).decisions[1]
    assert decision.status == "relaxed-turnover"
    assert decision.detail.startswith(
        "with every constraint: selling the names no longer eligible trades more than the limit"
    )


def test_after_holding_cash_the_next_rebalance_builds_the_book() -> None:
    days, n = 12, 4
    scores, returns = panel(days, n, seed=7)
    returns[:6, 2:] = np.nan  # two names until day 6: 2 x 40% cannot be fully invested
    cfg = OptimizerConfig(
        max_weight=0.4, industry_bound=None, turnover_limit=0.2, lookback=4, rebalance_every=2
    )
    result = optimize_weights(scores, returns, config=cfg)
    statuses = [(d.day, d.status) for d in result.decisions]
    assert statuses[:3] == [(1, "held"), (3, "held"), (5, "held")]
    np.testing.assert_array_equal(result.weights[[1, 3, 5]], 0.0)
    build, after = result.decisions[3:5]  # day 7: names 2 and 3 have 2 returns in the window
    assert (build.day, build.status) == (7, "optimal")
    assert build.detail.endswith("first rebalance, no turnover")
    assert result.weights[7].sum() == pytest.approx(1.0, abs=TOL)
    assert "first rebalance" not in after.detail
    assert np.abs(result.weights[after.day] - result.weights[7]).sum() <= 0.2 + TOL


def test_targets_are_point_in_time() -> None:
    days, n, t = 40, 10, 25
    scores, returns = panel(days, n, seed=4)
    codes = np.tile(np.arange(n) % 3, (days, 1))
    cfg = OptimizerConfig(
        risk_aversion=20.0,
        max_weight=0.3,
        industry_bound=0.1,
        turnover_limit=0.5,
        lookback=8,
        rebalance_every=1,
        risk_model="factor",
        n_factors=2,
    )
    base = optimize_weights(scores, returns, config=cfg, industries=codes).weights
    rng = np.random.default_rng(5)
    later_scores, later_returns, later_codes = scores.copy(), returns.copy(), codes.copy()
    later_scores[t + 1 :] = rng.normal(size=later_scores[t + 1 :].shape)
    later_returns[t + 1 :] = rng.normal(size=later_returns[t + 1 :].shape)
    later_returns[t + 1 :, 0] = np.nan
    later_codes[t + 1 :] = 0
    changed = optimize_weights(later_scores, later_returns, config=cfg, industries=later_codes)
    np.testing.assert_array_equal(changed.weights[: t + 1], base[: t + 1])
    assert not np.allclose(changed.weights[t + 1 :], base[t + 1 :])
    # and day t does read day t's return
    today = returns.copy()
    today[t] *= -3
    moved = optimize_weights(scores, today, config=cfg, industries=codes).weights
    assert not np.allclose(moved[t], base[t])
    np.testing.assert_array_equal(moved[:t], base[:t])


def test_a_day_with_no_eligible_name_is_held() -> None:
    days, n = 10, 4
    scores, returns = panel(days, n, seed=6)
    scores[6] = np.nan
    cfg = OptimizerConfig(max_weight=0.5, industry_bound=None, lookback=4)
    result = optimize_weights(scores, returns, config=cfg)
    decision = next(d for d in result.decisions if d.day == 6)
    assert decision.status == "held" and "no name has a score" in decision.detail
    np.testing.assert_array_equal(result.weights[6], result.weights[5])


def test_no_history_at_all_gives_no_target() -> None:
    scores, returns = panel(5, 3)
    result = optimize_weights(scores, returns, config=OptimizerConfig(lookback=20))
    assert result.decisions == [] and np.isnan(result.weights).all()


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_weight", 0, r"--max-weight 0: give a share in \(0, 1\]"),
        ("max_weight", 1.5, "--max-weight 1.5"),
        ("risk_aversion", 0.0, "--risk-aversion 0.0: give a positive number"),
        ("risk_aversion", float("nan"), "--risk-aversion nan"),
        ("risk_aversion", True, "--risk-aversion True"),
        ("long_only", "yes", "--dollar-neutral 'yes'"),
        ("industry_bound", -0.1, "--industry-bound -0.1: give 0 or more, or none"),
        ("turnover_limit", -1, "--turnover-limit -1"),
        ("gross_leverage", 0, "--gross-leverage 0"),
        ("risk_model", "pca", "--risk-model 'pca': choose ledoit-wolf, factor"),
        ("n_factors", 2.5, "--n-factors 2.5: give a whole number"),
        ("lookback", 1, "--lookback 1: give a whole number of days, 2 or more"),
        ("min_history", 0, "--min-history 0"),
        ("min_history", 1.2, "--min-history 1.2"),
        ("solver", "mosek", "--solver 'mosek': choose clarabel, osqp"),
        ("rebalance_every", 0, "--rebalance-every 0"),
    ],
)
def test_bad_config(field: str, value: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        OptimizerConfig(**{field: value})


def test_bad_arrays() -> None:
    risk = risk_model(4)
    with pytest.raises(UsageError, match="alpha must be one finite number a name"):
        optimize_day(np.array([0.1, np.nan, 0, 0]), risk)
    with pytest.raises(UsageError, match="the risk model covers 4 names, alpha 3"):
        optimize_day(np.zeros(3), risk)
    with pytest.raises(UsageError, match=r"industries has shape \(3,\)"):
        optimize_day(np.zeros(4), risk, industries=np.zeros(3, int))
    scores, returns = panel(5, 3)
    with pytest.raises(UsageError, match=r"returns has shape \(5, 2\)"):
        optimize_weights(scores, returns[:, :2])
    with pytest.raises(UsageError, match="integer industry codes"):
        optimize_weights(scores, returns, industries=np.zeros((5, 3)))
