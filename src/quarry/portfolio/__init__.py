"""Portfolio construction: from a day's scores to the names held or the weights targeted.

- ``topk_dropout_day``: one rebalance of Qlib's TopK-Dropout rule, as sell and buy masks.
- ``topk_dropout``: the rule run over days x instruments, giving the holdings after each day.
- ``optimize_weights``: mean-variance weights under limits (long-only or dollar-neutral,
  maximum weight, industry exposure against the benchmark, turnover, gross leverage),
  solved with cvxpy (Clarabel or OSQP), point in time, with a recorded fallback when a
  rebalance is infeasible; ``optimize_day`` is one rebalance.
- Risk models fitted on trailing returns: ``ledoit_wolf`` (shrunk covariance) and
  ``factor_model`` (statistical factors), both as factors plus specific variance.
"""

from typing import TYPE_CHECKING

from quarry._lazy import exports

if TYPE_CHECKING:  # imported on first use (``quarry._lazy``): cvxpy only for the optimizer
    from quarry.portfolio._config import SOLVERS, STATUSES, OptimizerConfig
    from quarry.portfolio._optimizer import (
        DayResult,
        Decision,
        Optimized,
        optimize_day,
        optimize_weights,
    )
    from quarry.portfolio._risk import RISK_MODELS, RiskModel, factor_model, fit_risk, ledoit_wolf
    from quarry.portfolio._topk import check_topk_params, topk_dropout, topk_dropout_day

# each submodule and the public names it defines
_MODULES = {
    "_config": "SOLVERS STATUSES OptimizerConfig",
    "_optimizer": "DayResult Decision Optimized optimize_day optimize_weights",
    "_risk": "RISK_MODELS RiskModel factor_model fit_risk ledoit_wolf",
    "_topk": "check_topk_params topk_dropout topk_dropout_day",
}

__all__ = [
    "RISK_MODELS",
    "SOLVERS",
    "STATUSES",
    "DayResult",
    "Decision",
    "Optimized",
    "OptimizerConfig",
    "RiskModel",
    "check_topk_params",
    "factor_model",
    "fit_risk",
    "ledoit_wolf",
    "optimize_day",
    "optimize_weights",
    "topk_dropout",
    "topk_dropout_day",
]

if not TYPE_CHECKING:  # type checkers read the imports above, and flag a misspelled name
    __getattr__, __dir__ = exports(__name__, _MODULES)
