"""Compile expression trees into one vectorized Polars plan over all instruments at once.

The input is a long frame sorted by instrument, then date. Time-series operators run per
instrument (``over("instrument")``), cross-sectional ones per date. Every distinct node of
all requested expressions becomes one column, computed once, in stages by depth, so a
sub-expression shared by many features (``Ref($close, 1)`` in Alpha158) costs one pass.

Missing values are nulls throughout (a NaN from 0/0 or Log of a negative becomes null), so
that windows skip them, as pandas' rolling functions skip NaN in Qlib. The semantics follow
Qlib's, as pinned down in docs/qlib_operators.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import polars as pl

from quarry.exceptions import ExpressionError, LookaheadError
from quarry.features._expr import Expr
from quarry.features._parser import parse
from quarry.features._registry import OPERATORS

__all__ = ["check_lookahead", "compute"]

BY_INSTRUMENT = "instrument"
BY_DATE = "date"


def check_lookahead(expr: Expr, *, label: bool = False) -> None:
    """Refuse a feature that reads the future: a Ref with a negative shift.

    Labels may look ahead (that is what they are for); features may not. Raised when the
    expression is compiled, before any data is read, naming the offending sub-expression.
    """
    if label:
        return
    for node in expr.walk():
        if node.op == "Ref" and _window(node) < 0:
            raise LookaheadError(
                f"{node} reads {-_window(node)} row(s) into the future, inside the feature "
                f"{expr}; only a label may use a negative Ref"
            )


def _window(node: Expr) -> int:
    arg = node.args[-1]
    if arg.op != "#" or not arg.value.is_integer():
        raise ExpressionError(f"{node}: the window must be a whole number, not {arg}")
    return int(arg.value)


def _clean(e: pl.Expr) -> pl.Expr:
    """NaN becomes null (missing), so that windows skip it as pandas skips NaN. Infinities
    stay, as in Qlib (see docs/qlib_operators.md)."""
    return e.fill_nan(None)


def _ts(e: pl.Expr) -> pl.Expr:
    return e.over(BY_INSTRUMENT)


def _rolling(fn: Callable[[pl.Expr, int], pl.Expr]) -> Callable[[list[pl.Expr], Expr], pl.Expr]:
    """A window operator: N > 0 a trailing window of N rows (at least one value), N == 0
    the whole history so far."""

    def build(args: list[pl.Expr], node: Expr) -> pl.Expr:
        n = _window(node)
        if n < 0:
            raise ExpressionError(f"{node}: a window cannot be negative")
        return _ts(fn(args[0], n))

    return build


def _cum(e: pl.Expr) -> pl.Expr:
    """A running total that carries through a missing row, as pandas' expanding windows do
    (Polars gives null on that row)."""
    return e.forward_fill()


def _mean(x: pl.Expr, n: int) -> pl.Expr:
    return _cum(x.cum_sum()) / x.cum_count() if n == 0 else x.rolling_mean(n, min_samples=1)


def _sum(x: pl.Expr, n: int) -> pl.Expr:
    total = _cum(x.cum_sum()) if n == 0 else x.rolling_sum(n, min_samples=1)
    count = (
        x.cum_count() if n == 0 else x.is_not_null().cast(pl.Int32).rolling_sum(n, min_samples=1)
    )
    return pl.when(count > 0).then(total)  # a window with no value has no sum


def _var(x: pl.Expr, n: int) -> pl.Expr:
    if n == 0:
        # Welford would be steadier; sums of squares are fine at feature magnitudes.
        k = x.cum_count()
        mean = _cum(x.cum_sum()) / k
        return pl.when(k > 1).then((_cum((x * x).cum_sum()) - k * mean * mean) / (k - 1))
    return x.rolling_var(n, min_samples=1, ddof=1)


def _count(x: pl.Expr, n: int) -> pl.Expr:
    valid = x.is_not_null().cast(pl.Float64)
    return valid.cum_sum() if n == 0 else valid.rolling_sum(n, min_samples=1)


def _max(x: pl.Expr, n: int) -> pl.Expr:
    return _cum(x.cum_max()) if n == 0 else x.rolling_max(n, min_samples=1)


def _min(x: pl.Expr, n: int) -> pl.Expr:
    return _cum(x.cum_min()) if n == 0 else x.rolling_min(n, min_samples=1)


def _ref(args: list[pl.Expr], node: Expr) -> pl.Expr:
    return _ts(args[0].shift(_window(node)))


def _delta(args: list[pl.Expr], node: Expr) -> pl.Expr:
    return _ts(args[0] - args[0].shift(_window(node)))


def _cs_rank(args: list[pl.Expr], node: Expr) -> pl.Expr:
    x = args[0]
    return (x.rank("average") / x.count()).over(BY_DATE)


def _cs_zscore(args: list[pl.Expr], node: Expr) -> pl.Expr:
    x = args[0]
    return ((x - x.mean()) / x.std(ddof=1)).over(BY_DATE)


def _cs_demean(args: list[pl.Expr], node: Expr) -> pl.Expr:
    return (args[0] - args[0].mean()).over(BY_DATE)


def _binary(fn: Callable[[pl.Expr, pl.Expr], pl.Expr]) -> Callable[[list[pl.Expr], Expr], pl.Expr]:
    return lambda args, node: fn(args[0], args[1])


def _as_float(e: pl.Expr) -> pl.Expr:
    return e.cast(pl.Float64)


_BUILD: dict[str, Callable[[list[pl.Expr], Expr], pl.Expr]] = {
    "Add": _binary(lambda a, b: a + b),
    "Sub": _binary(lambda a, b: a - b),
    "Mul": _binary(lambda a, b: a * b),
    "Div": _binary(lambda a, b: _clean(a / b)),
    # A comparison with a missing value is false (true for !=), as in pandas and so Qlib.
    "Gt": _binary(lambda a, b: _as_float((a > b).fill_null(False))),
    "Ge": _binary(lambda a, b: _as_float((a >= b).fill_null(False))),
    "Lt": _binary(lambda a, b: _as_float((a < b).fill_null(False))),
    "Le": _binary(lambda a, b: _as_float((a <= b).fill_null(False))),
    "Eq": _binary(lambda a, b: _as_float((a == b).fill_null(False))),
    "Ne": _binary(lambda a, b: _as_float((a != b).fill_null(True))),
    "And": _binary(lambda a, b: _as_float((a != 0) & (b != 0))),
    "Or": _binary(lambda a, b: _as_float((a != 0) | (b != 0))),
    # np.maximum / np.minimum: a missing side makes the result missing.
    "Greater": _binary(
        lambda a, b: pl.when(a.is_not_null() & b.is_not_null()).then(pl.max_horizontal(a, b))
    ),
    "Less": _binary(
        lambda a, b: pl.when(a.is_not_null() & b.is_not_null()).then(pl.min_horizontal(a, b))
    ),
    "Power": _binary(lambda a, b: _clean(a.pow(b))),
    "Neg": lambda args, node: -args[0],
    "Abs": lambda args, node: args[0].abs(),
    "Log": lambda args, node: _clean(args[0].log()),
    "Sign": lambda args, node: args[0].sign().cast(pl.Float64),
    "Not": lambda args, node: _as_float(args[0] == 0),
    "If": lambda args, node: pl.when(args[0] != 0).then(args[1]).otherwise(args[2]),
    "Ref": _ref,
    "Delta": _delta,
    "Mean": _rolling(_mean),
    "Sum": _rolling(_sum),
    "Var": _rolling(_var),
    "Std": _rolling(lambda x, n: _var(x, n).sqrt()),
    "Count": _rolling(_count),
    "Max": _rolling(_max),
    "Min": _rolling(_min),
    "CSRank": _cs_rank,
    "CSZScore": _cs_zscore,
    "CSDemean": _cs_demean,
}


def compute(
    frame: pl.DataFrame,
    features: Mapping[str, Expr | str],
    *,
    label: Expr | str | None = None,
) -> pl.DataFrame:
    """Evaluate named expressions on a long frame sorted by instrument, then date.

    Returns instrument, date and one Float64 column per feature, plus ``LABEL0`` when a
    label is given. Features that read the future raise LookaheadError before any work.
    """
    exprs = {name: parse(e) if isinstance(e, str) else e for name, e in features.items()}
    for e in exprs.values():
        check_lookahead(e)
    if label is not None:
        exprs["LABEL0"] = parse(label) if isinstance(label, str) else label
    fields = {n.name for e in exprs.values() for n in e.walk() if n.op == "$"}
    missing = sorted(f for f in fields if f not in frame.columns)
    if missing:
        import difflib

        have = [c for c in frame.columns if c not in (BY_INSTRUMENT, BY_DATE)]
        hints = [
            f"${m}"
            + (f" (did you mean ${c[0]}?)" if (c := difflib.get_close_matches(m, have, 1)) else "")
            for m in missing
        ]
        raise ExpressionError(
            f"unknown field {', '.join(hints)}; fields: {', '.join('$' + h for h in have)}"
        )

    # Every distinct operator node becomes a column, computed once, by depth.
    names: dict[Expr, str] = {}
    depth: dict[Expr, int] = {}
    stages: dict[int, list[pl.Expr]] = {}
    for e in exprs.values():
        for node in e.walk():
            if node in depth:
                continue
            if node.op == "$" or node.op == "#":
                depth[node] = 0
                continue
            spec = OPERATORS.get(node.op)
            build = _BUILD.get(node.op)
            if spec is None or build is None:
                raise ExpressionError(f"{node}: operator {node.op} is not supported yet")
            depth[node] = 1 + max(depth[a] for a in node.args)
            names[node] = f"__n{len(names)}"
            args = [_ref_of(a, names) for a in node.args]
            stages.setdefault(depth[node], []).append(build(args, node).alias(names[node]))

    lf = frame.lazy().with_columns(
        _clean(pl.col(f).cast(pl.Float64)).alias(f) for f in sorted(fields)
    )
    for d in sorted(stages):
        lf = lf.with_columns(stages[d])
    out = [_ref_of(e, names).cast(pl.Float64).alias(name) for name, e in exprs.items()]
    return lf.select(BY_INSTRUMENT, BY_DATE, *out).collect()


def _ref_of(node: Expr, names: Mapping[Expr, str]) -> pl.Expr:
    if node.op == "$":
        return pl.col(node.name)
    if node.op == "#":
        return pl.lit(node.value, pl.Float64)
    return pl.col(names[node])
