"""Risk models for the optimizer: a covariance in low-rank-plus-diagonal form.

Every model here is ``Sigma = B @ B.T + diag(d)``, with ``B`` the ``n x k`` exposures and ``d``
the ``n`` specific variances. The optimizer never forms ``Sigma``: it penalises
``|B.T @ w|^2 + sum(d * w^2)``, which costs ``O(n k)`` instead of ``O(n^2)``.

- ``ledoit_wolf``: the sample covariance shrunk towards ``mu * I`` by Ledoit and Wolf's (2004)
  intensity, exactly as ``sklearn.covariance.ledoit_wolf`` computes it. With ``Xc`` the centred
  returns (``T x n``) it is ``(1 - delta) * Xc.T @ Xc / T + delta * mu * I``, so
  ``B = sqrt((1 - delta) / T) * Xc.T`` (``k = T``, the window length, while ``T <= n``) and
  ``d = delta * mu``.
- ``factor_model``: a statistical factor model, the top ``k`` principal components of the sample
  covariance as factors and the diagonal of what they leave as specific variance.

Both are fitted on a trailing window of daily returns; which window, and which names enter it,
is the caller's point-in-time choice (``fit_risk`` takes the window as given).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quarry.exceptions import UsageError
from quarry.portfolio._config import RISK_MODELS

__all__ = ["RISK_MODELS", "RiskModel", "factor_model", "fit_risk", "ledoit_wolf"]

FloatArray = npt.NDArray[np.float64]


# Specific variances never fall below this share of the median name's variance: a factor model
# with as many factors as the window has days explains everything, and a zero diagonal would
# leave the optimizer a singular covariance.
_SPECIFIC_FLOOR = 1e-6


@dataclass(frozen=True, eq=False)  # arrays: == would be elementwise
class RiskModel:
    """A covariance ``exposures @ exposures.T + diag(specific)``.

    Parameters
    ----------
    exposures : array of float, shape (n, k)
        Each name's loading on ``k`` factors of unit variance.
    specific : array of float, shape (n,)
        Each name's specific (idiosyncratic) variance, at least 0.

    Examples
    --------
    >>> import numpy as np
    >>> model = RiskModel(np.array([[1.0], [2.0]]), np.array([0.5, 0.5]))
    >>> model.covariance().tolist()
    [[1.5, 2.0], [2.0, 4.5]]
    >>> model.variance(np.array([1.0, -1.0]))
    2.0
    """

    exposures: FloatArray
    specific: FloatArray

    def __post_init__(self) -> None:
        b, d = self.exposures, self.specific
        if b.ndim != 2 or d.shape != (b.shape[0],):
            raise UsageError(
                f"a risk model needs exposures of shape (n, k) and specific variances of shape "
                f"(n,); got {b.shape} and {d.shape}"
            )
        if not (np.isfinite(b).all() and np.isfinite(d).all() and (d >= 0).all()):
            raise UsageError(
                "a risk model needs finite exposures and finite specific variances >= 0"
            )

    @property
    def n(self) -> int:
        """The number of names."""
        return int(self.exposures.shape[0])

    def covariance(self) -> FloatArray:
        """The dense ``n x n`` covariance (for tests and small universes)."""
        b = self.exposures
        cov: FloatArray = b @ b.T
        cov[np.diag_indices_from(cov)] += self.specific
        return cov

    def diagonal(self) -> FloatArray:
        """Each name's variance, without forming the covariance."""
        out: FloatArray = np.einsum("ik,ik->i", self.exposures, self.exposures) + self.specific
        return out

    def variance(self, weights: npt.ArrayLike) -> float:
        """The variance of a portfolio with these weights, ``w' Sigma w``."""
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (self.n,):
            raise UsageError(f"weights have shape {w.shape}; the risk model covers {self.n} names")
        y = self.exposures.T @ w
        return float(y @ y + self.specific @ (w * w))


def _matrix(returns: npt.ArrayLike, what: str) -> FloatArray:
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise UsageError(f"{what} must be days x names with at least one of each; got {x.shape}")
    return x


def ledoit_wolf(returns: npt.ArrayLike) -> RiskModel:
    """Ledoit-Wolf shrunk covariance of ``returns``, in factor form.

    The estimate and its shrinkage intensity are those of ``sklearn.covariance.ledoit_wolf``
    (data centred, covariance with divisor ``T``), computed without the ``n x n`` matrix.

    Parameters
    ----------
    returns : array of float, shape (T, n)
        Daily returns, one row a day; no NaN (``fit_risk`` fills gaps).

    Returns
    -------
    RiskModel
        ``exposures`` of shape ``(n, min(T, n))`` and ``specific`` all equal to
        ``delta * mu``, ``mu`` the mean variance and ``delta`` the shrinkage intensity.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(50, 4))
    >>> from sklearn.covariance import ledoit_wolf as sk
    >>> np.allclose(ledoit_wolf(x).covariance(), sk(x)[0])
    True
    """
    x = _matrix(returns, "returns")
    if not np.isfinite(x).all():
        raise UsageError("returns hold NaN or infinite values; fill them first (see fit_risk)")
    t, n = x.shape
    xc = x - x.mean(axis=0)
    x2 = xc * xc
    var = x2.sum(axis=0) / t
    mu = float(var.sum() / n)
    if n == 1:
        # One name: any shrinkage gives the same number, and sklearn reports none.
        shrink = 0.0
    else:
        # sklearn's blocked sums, in closed form: the sum of the entries of X2.T @ X2 is the
        # squared norm of X2's row sums, and |Xc.T Xc|_F = |Xc Xc.T|_F (take the smaller Gram).
        beta_ = float(np.sum(x2.sum(axis=1) ** 2))
        gram = xc @ xc.T if t <= n else xc.T @ xc
        delta_ = float(np.sum(gram * gram)) / t**2
        beta = (beta_ / t - delta_) / (n * t)
        delta = (delta_ - 2.0 * mu * var.sum() + n * mu**2) / n
        beta = min(beta, delta)
        shrink = 0.0 if beta == 0 else beta / delta
    if t <= n:
        exposures = np.sqrt((1.0 - shrink) / t) * xc.T
    else:
        # More days than names: an n-column square root of the sample covariance is smaller.
        evals, evecs = np.linalg.eigh(xc.T @ xc / t)
        exposures = evecs * np.sqrt(np.clip(evals, 0.0, None) * (1.0 - shrink))
    return RiskModel(np.ascontiguousarray(exposures), np.full(n, shrink * mu))


def factor_model(returns: npt.ArrayLike, n_factors: int) -> RiskModel:
    """A statistical factor model: the top principal components of the sample covariance.

    With ``S = Xc.T @ Xc / T`` (centred returns, divisor ``T``) and its eigenpairs
    ``(lambda_j, v_j)`` in decreasing order, the exposures are ``v_j * sqrt(lambda_j)`` for the
    first ``k = min(n_factors, T, n)`` and the specific variances are the diagonal of
    ``S - B @ B.T``, so each name's total variance is its sample variance. A specific variance
    is floored at a millionth of the median name's variance, which only binds when the factors
    explain (nearly) everything.

    Parameters
    ----------
    returns : array of float, shape (T, n)
        Daily returns, one row a day; no NaN (``fit_risk`` fills gaps).
    n_factors : int
        Factors to keep, 1 or more; fewer when the window has fewer days or names.
    """
    x = _matrix(returns, "returns")
    if not np.isfinite(x).all():
        raise UsageError("returns hold NaN or infinite values; fill them first (see fit_risk)")
    _check_factors(n_factors)
    t, n = x.shape
    xc = x - x.mean(axis=0)
    k = min(n_factors, t, n)
    # The right singular vectors of Xc are S's eigenvectors, with eigenvalues s^2 / T.
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    exposures = vt[:k].T * (s[:k] / np.sqrt(t))
    var = np.einsum("ti,ti->i", xc, xc) / t
    residual = var - np.einsum("ik,ik->i", exposures, exposures)
    floor = max(_SPECIFIC_FLOOR * float(np.median(var)), np.finfo(np.float64).tiny)
    return RiskModel(np.ascontiguousarray(exposures), np.maximum(residual, floor))


def _check_factors(n_factors: int) -> None:
    if isinstance(n_factors, bool) or not isinstance(n_factors, int) or n_factors < 1:
        raise UsageError(f"--n-factors {n_factors!r}: give a whole number of factors, 1 or more")


def fit_risk(returns_window: npt.ArrayLike, method: str, n_factors: int = 10) -> RiskModel:
    """Fit a risk model on a window of daily returns that may have gaps.

    A missing return (NaN) is a day the name did not trade or had not listed yet. Each name
    is centred on the mean of the returns it has, its missing days are set to that mean (0 once
    centred), and its column is scaled by ``sqrt(T / T_i)``, ``T_i`` its count of returns. The
    scaling gives each name the variance of the returns it has (with divisor ``T_i``): without
    it, a name missing half the window would look half as risky and the optimizer would favour
    it. Covariances between names are shrunk by the gaps, never inflated, and the result is
    still positive semi-definite. On a window without gaps this is exactly ``ledoit_wolf`` or
    ``factor_model``.

    Parameters
    ----------
    returns_window : array of float, shape (T, n)
        The trailing returns, one row a day; NaN where missing. Every name needs at least one
        return (the optimizer requires ``--min-history`` of the window).
    method : {"ledoit-wolf", "factor"}
        The risk model.
    n_factors : int, default 10
        Factors of the ``"factor"`` model.
    """
    if method not in RISK_MODELS:
        raise UsageError(f"--risk-model {method!r}: choose one of {', '.join(RISK_MODELS)}")
    _check_factors(n_factors)
    x = _matrix(returns_window, "the returns window")
    have = np.isfinite(x)
    count = have.sum(axis=0)
    if (count == 0).any():
        bad = np.flatnonzero(count == 0)[:5].tolist()
        raise UsageError(
            f"names at columns {bad} have no return in the window; leave out names without "
            "history before fitting a risk model"
        )
    t = x.shape[0]
    filled = np.where(have, x, 0.0)
    mean = filled.sum(axis=0) / count
    centred = np.where(have, x - mean, 0.0) * np.sqrt(t / count)
    if method == "ledoit-wolf":
        return ledoit_wolf(centred)
    return factor_model(centred, n_factors)
