"""Features: Qlib's expression language over the point-in-time store.

So far: immutable expression trees, the parser, the compiler to one vectorized Polars plan
(every operator of Qlib's language but Mask, plus cross-sectional ones), and the Alpha158
and Alpha360 sets. Processors, the cache, out-of-core computation and the command line
follow.
"""

from quarry.features._compile import check_lookahead, compute
from quarry.features._expr import Expr, F, Num, call
from quarry.features._parser import parse
from quarry.features._registry import OPERATORS
from quarry.features._sets import DEFAULT_LABEL, FEATURE_SETS, alpha158, alpha360

__all__ = [
    "DEFAULT_LABEL",
    "FEATURE_SETS",
    "OPERATORS",
    "Expr",
    "F",
    "Num",
    "alpha158",
    "alpha360",
    "call",
    "check_lookahead",
    "compute",
    "parse",
]
