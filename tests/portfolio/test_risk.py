"""Risk models against sklearn's Ledoit-Wolf, numpy's eigen-decomposition and planted factors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from quarry.exceptions import UsageError
from quarry.portfolio._risk import RiskModel, factor_model, fit_risk, ledoit_wolf


def returns(days: int, names: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    market = rng.normal(size=(days, 1)) * 0.01
    return 0.02 * rng.normal(size=(days, names)) + market * rng.uniform(0.5, 1.5, names) + 1e-3


@pytest.mark.parametrize(("days", "names"), [(60, 4), (30, 80), (120, 300), (50, 50), (7, 1)])
def test_ledoit_wolf_is_sklearns(days: int, names: int) -> None:
    x = returns(days, names)
    fitted = LedoitWolf().fit(x)
    model = ledoit_wolf(x)
    scale = np.abs(fitted.covariance_).max()
    np.testing.assert_allclose(model.covariance(), fitted.covariance_, rtol=0, atol=1e-10 * scale)
    mu = np.trace(fitted.covariance_) / names  # the shrinkage keeps the trace
    np.testing.assert_allclose(model.specific, fitted.shrinkage_ * mu, rtol=1e-10)
    assert model.exposures.shape == (names, min(days, names))


def test_ledoit_wolf_shrinks_when_days_are_few() -> None:
    """Few days and many names: the intensity is well inside (0, 1), so a formula that forgot
    the shrinkage (or shrank fully) would miss sklearn's covariance above."""
    fitted = LedoitWolf().fit(returns(30, 80))
    assert 0.1 < fitted.shrinkage_ < 0.9


def test_factor_model_keeps_each_variance_and_the_top_eigenvectors() -> None:
    x = returns(200, 40, seed=1)
    model = factor_model(x, 3)
    sample = np.cov(x, rowvar=False, ddof=0)
    np.testing.assert_allclose(np.diag(model.covariance()), np.diag(sample), rtol=1e-12)
    evals, evecs = np.linalg.eigh(sample)
    top = evecs[:, ::-1][:, :3] * np.sqrt(evals[::-1][:3])
    # the same factors up to sign
    np.testing.assert_allclose(model.exposures @ model.exposures.T, top @ top.T, atol=1e-14)


def test_factor_model_recovers_planted_factors() -> None:
    rng = np.random.default_rng(2)
    days, names, k = 5000, 100, 3
    loadings = rng.normal(size=(names, k)) * 0.01
    specific = rng.uniform(1e-4, 4e-4, names)
    x = rng.normal(size=(days, k)) @ loadings.T + rng.normal(size=(days, names)) * np.sqrt(specific)
    model = factor_model(x, k)
    truth = loadings @ loadings.T + np.diag(specific)
    error = np.linalg.norm(model.covariance() - truth) / np.linalg.norm(truth)
    assert error < 0.06
    # principal components absorb a little specific variance: within 15% here
    np.testing.assert_allclose(model.specific, specific, rtol=0.15)
    # one factor too few misses a planted one
    short = factor_model(x, k - 1)
    assert np.linalg.norm(short.covariance() - truth) / np.linalg.norm(truth) > 0.3


def test_factor_model_with_more_factors_than_data_is_floored() -> None:
    x = returns(6, 10)
    model = factor_model(x, 50)
    assert model.exposures.shape == (10, 6)
    sample = np.cov(x, rowvar=False, ddof=0)
    # six factors explain a six-day window fully: specific variance is only the floor
    floor = 1e-6 * np.median(np.diag(sample))
    np.testing.assert_allclose(model.specific, floor)
    assert np.linalg.eigvalsh(model.covariance()).min() > 0


def test_fit_risk_without_gaps_is_the_plain_model() -> None:
    x = returns(40, 12)
    np.testing.assert_allclose(
        fit_risk(x, "ledoit-wolf").covariance(), ledoit_wolf(x).covariance(), atol=1e-18
    )
    np.testing.assert_allclose(
        fit_risk(x, "factor", 2).covariance(), factor_model(x, 2).covariance(), atol=1e-18
    )


def test_fit_risk_with_gaps() -> None:
    x = returns(40, 6)
    x[:15, 2] = np.nan  # listed late
    x[[3, 9, 30], 4] = np.nan  # a few days without trading
    # Each name keeps the variance of the returns it has (the factor model keeps every
    # variance whatever the factors explain).
    model = fit_risk(x, "factor", 2)
    np.testing.assert_allclose(model.diagonal(), np.nanvar(x, axis=0), rtol=1e-12)
    # Ledoit-Wolf on the same filled and rescaled matrix, built by hand
    have = np.isfinite(x)
    centred = np.where(have, x - np.nanmean(x, axis=0), 0.0)
    filled = centred * np.sqrt(len(x) / have.sum(axis=0))
    expected = LedoitWolf().fit(filled).covariance_
    np.testing.assert_allclose(fit_risk(x, "ledoit-wolf").covariance(), expected, atol=1e-16)
    assert np.isfinite(model.covariance()).all()


def test_fit_risk_errors() -> None:
    x = returns(10, 3)
    with pytest.raises(UsageError, match=r"--risk-model 'pca': choose one of ledoit-wolf, factor"):
        fit_risk(x, "pca")
    with pytest.raises(UsageError, match="--n-factors 0"):
        fit_risk(x, "factor", 0)
    x[:, 1] = np.nan
    with pytest.raises(UsageError, match=r"columns \[1\] have no return"):
        fit_risk(x, "ledoit-wolf")
    with pytest.raises(UsageError, match="NaN"):
        ledoit_wolf(x)


def test_risk_model_variance_and_shapes() -> None:
    rng = np.random.default_rng(3)
    model = RiskModel(rng.normal(size=(5, 2)), rng.uniform(0.1, 0.2, 5))
    w = rng.normal(size=5)
    assert model.variance(w) == pytest.approx(w @ model.covariance() @ w, rel=1e-12)
    np.testing.assert_allclose(model.diagonal(), np.diag(model.covariance()))
    with pytest.raises(UsageError, match="covers 5 names"):
        model.variance(np.ones(4))
    with pytest.raises(UsageError, match="shape"):
        RiskModel(np.ones((5, 2)), np.ones(4))
    with pytest.raises(UsageError, match="specific variances >= 0"):
        RiskModel(np.ones((2, 1)), np.array([0.1, -0.1]))
