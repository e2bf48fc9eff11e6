"""Features: Qlib's expression language over the point-in-time store.

So far: immutable expression trees and the parser. The compiler to vectorized Polars,
Alpha158/Alpha360, processors, the cache and the command line follow.
"""

from quarry.features._expr import Expr, F, Num, call
from quarry.features._parser import parse
from quarry.features._registry import OPERATORS

__all__ = ["OPERATORS", "Expr", "F", "Num", "call", "parse"]
