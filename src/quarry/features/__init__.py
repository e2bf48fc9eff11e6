"""Features: Qlib's expression language over the point-in-time store.

Immutable expression trees and their parser; a compiler that evaluates every distinct node
once over dense instruments x days panels, with numba window kernels; cross-sectional
operators; the Alpha158 and Alpha360 sets; and processors with fit-on-train semantics.
"""

from typing import TYPE_CHECKING

from quarry._lazy import exports

if TYPE_CHECKING:  # imported on first use (``quarry._lazy``): numba only to compute
    from quarry.features._cache import FeatureCache
    from quarry.features._compile import Plan, check_lookahead, compute
    from quarry.features._expr import Expr, F, Num, call
    from quarry.features._materialize import Materialized, materialize
    from quarry.features._parser import parse
    from quarry.features._processors import (
        PROCESSORS,
        CSRankNorm,
        CSZScoreNorm,
        DropnaLabel,
        Fillna,
        IndustryNeutralize,
        Pipeline,
        ProcessInf,
        Processor,
        RobustZScoreNorm,
        Winsorize,
        ZScoreNorm,
    )
    from quarry.features._registry import OPERATORS
    from quarry.features._sets import DEFAULT_LABEL, FEATURE_SETS, alpha158, alpha360

# each submodule and the public names it defines
_MODULES = {
    "_cache": "FeatureCache",
    "_compile": "Plan check_lookahead compute",
    "_expr": "Expr F Num call",
    "_materialize": "Materialized materialize",
    "_parser": "parse",
    "_processors": "PROCESSORS CSRankNorm CSZScoreNorm DropnaLabel Fillna IndustryNeutralize "
    "Pipeline ProcessInf Processor RobustZScoreNorm Winsorize ZScoreNorm",
    "_registry": "OPERATORS",
    "_sets": "DEFAULT_LABEL FEATURE_SETS alpha158 alpha360",
}

__all__ = [
    "DEFAULT_LABEL",
    "FEATURE_SETS",
    "OPERATORS",
    "PROCESSORS",
    "CSRankNorm",
    "CSZScoreNorm",
    "DropnaLabel",
    "Expr",
    "F",
    "FeatureCache",
    "Fillna",
    "IndustryNeutralize",
    "Materialized",
    "Num",
    "Pipeline",
    "Plan",
    "ProcessInf",
    "Processor",
    "RobustZScoreNorm",
    "Winsorize",
    "ZScoreNorm",
    "alpha158",
    "alpha360",
    "call",
    "check_lookahead",
    "compute",
    "materialize",
    "parse",
]

if not TYPE_CHECKING:  # type checkers read the imports above, and flag a misspelled name
    __getattr__, __dir__ = exports(__name__, _MODULES)
