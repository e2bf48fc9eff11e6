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

import numpy as np
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


def _window(node: Expr, position: int = -1) -> int:
    """The whole-number window argument of a node (its last argument unless told)."""
    arg = node.args[position]
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


def _windowed(name: str) -> Callable[[pl.Expr, int], pl.Expr]:
    """A Polars rolling statistic that has no expanding form here (N == 0 is refused)."""

    def fn(x: pl.Expr, n: int) -> pl.Expr:
        if n == 0:
            raise ExpressionError(f"{name} needs a window of at least 1 row")
        return _clean(_STAT[name](x, n))

    return fn


_STAT: dict[str, Callable[[pl.Expr, int], pl.Expr]] = {
    "Med": lambda x, n: x.rolling_median(n, min_samples=1),
    "Skew": lambda x, n: x.rolling_skew(n, bias=False, min_samples=3),
    "Kurt": lambda x, n: x.rolling_kurtosis(n, fisher=True, bias=False, min_samples=4),
}


def _count_valid(x: pl.Expr, n: int) -> pl.Expr:
    return x.is_not_null().cast(pl.Float64).rolling_sum(n, min_samples=1)


def _msum(x: pl.Expr, n: int) -> pl.Expr:
    """Rolling sum in which a missing value counts as 0."""
    return x.fill_null(0.0).rolling_sum(n, min_samples=1)


def _mad(x: pl.Expr, n: int) -> pl.Expr:
    """Mean absolute deviation around the window mean (not the median deviation).

    Polars has no rolling form, so each of the N offsets is one vectorized pass.
    """
    if n == 0:
        raise ExpressionError("Mad needs a window of at least 1 row")
    mean = x.rolling_mean(n, min_samples=1)
    total = pl.sum_horizontal((x.shift(k) - mean).abs().fill_null(0.0) for k in range(n))
    return total / _count_valid(x, n)


def _quantile(args: list[pl.Expr], node: Expr) -> pl.Expr:
    n = _window(node, 1)
    q = node.args[2]
    if q.op != "#" or not 0 <= q.value <= 1:
        raise ExpressionError(f"{node}: the quantile must be a number between 0 and 1")
    return _ts(args[0].rolling_quantile(q.value, "linear", n, min_samples=1))


def _rank(x: pl.Expr, n: int) -> pl.Expr:
    """Percentile of the current value in its window (average rank of ties / count)."""
    if n == 0:
        raise ExpressionError("Rank needs a window of at least 1 row")
    rank = x.rolling_rank(n, "average", min_samples=1)
    return pl.when(x.is_not_null()).then(rank / _count_valid(x, n))


def _ema(args: list[pl.Expr], node: Expr) -> pl.Expr:
    span = node.args[1]
    if span.op != "#" or span.value <= 0:
        raise ExpressionError(f"{node}: the span must be a positive number")
    x = args[0]
    # A missing row keeps its weight slot and repeats the last average, as pandas does.
    if span.value < 1:  # Qlib reads a fraction as the smoothing factor itself
        ema = x.ewm_mean(alpha=span.value, adjust=True, min_samples=1, ignore_nulls=False)
    else:
        ema = x.ewm_mean(span=span.value, adjust=True, min_samples=1, ignore_nulls=False)
    return _ts(ema.forward_fill())


def _pair(args: list[pl.Expr], node: Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr, int]:
    """Both series restricted to rows where both are present, and their count."""
    n = _window(node)
    if n <= 0:
        raise ExpressionError(f"{node}: the window must be at least 1 row")
    both = args[0].is_not_null() & args[1].is_not_null()
    a, b = pl.when(both).then(args[0]), pl.when(both).then(args[1])
    return a, b, _count_valid(a, n), n


def _cov(args: list[pl.Expr], node: Expr) -> pl.Expr:
    a, b, k, n = _pair(args, node)
    sab, sa, sb = _msum(a * b, n), _msum(a, n), _msum(b, n)
    return _ts(_clean(pl.when(k > 1).then((sab - sa * sb / k) / (k - 1))))


_FLAT = 2e-5  # Qlib masks Corr and Rsquare where a rolling std is this close to zero


def _flat(x: pl.Expr, n: int) -> pl.Expr:
    return x.rolling_std(n, min_samples=1, ddof=1).abs() <= _FLAT


def _corr(args: list[pl.Expr], node: Expr) -> pl.Expr:
    a, b, k, n = _pair(args, node)
    sab, sa, sb = _msum(a * b, n), _msum(a, n), _msum(b, n)
    saa, sbb = _msum(a * a, n), _msum(b * b, n)
    cov = sab - sa * sb / k
    den = ((saa - sa * sa / k) * (sbb - sb * sb / k)).sqrt()
    corr = _clean(pl.when(k > 1).then(cov / den))
    flat = _flat(args[0], n).fill_null(False) | _flat(args[1], n).fill_null(False)
    return _ts(pl.when(~flat).then(corr))


def _pad(values: np.ndarray, row: np.ndarray, n: int, fill: float) -> tuple[np.ndarray, np.ndarray]:
    """Pad each instrument of a column in front with n-1 ``fill`` slots, so that no window
    reaches into the previous instrument (``row``: each row's index within its instrument).

    Returns the padded array and, per row, the padded index where its window starts: row r
    sits at r + (n-1) * k in the padded array, k the instruments started by then, and its
    window starts n-1 slots earlier.
    """
    starts = np.flatnonzero(row == 0)
    padded = np.insert(values, np.repeat(starts, n - 1), fill)
    rows = np.arange(values.size)
    at = rows + (np.searchsorted(starts, rows, side="right") - 1) * (n - 1)
    return padded, at


def _by_numpy(x: pl.Expr, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> pl.Expr:
    """Run a numpy kernel over the whole column at once: ``fn(values, row)`` with missing
    values as NaN and ``row`` each row's index within its instrument."""

    def run(s: pl.Series) -> pl.Series:
        parts = s.struct.unnest()
        values = parts["x"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        return pl.Series(fn(values, parts["row"].to_numpy())).fill_nan(None)

    row = pl.int_range(pl.len(), dtype=pl.Int64).over(BY_INSTRUMENT)
    return pl.struct(x.alias("x"), row.alias("row")).map_batches(run, return_dtype=pl.Float64)


def _regression_numpy(values: np.ndarray, row: np.ndarray, n: int, what: str) -> np.ndarray:
    """Least squares of each window's values on their slot positions 1..n (NaN rows
    dropped, today at n), over a column of several instruments (``row``: index within the
    instrument). Window sums come from cumulative sums, so memory stays linear in rows."""
    padded, at = _pad(values, row, n, np.nan)  # NaN padding: dropped like missing values
    ok = ~np.isnan(padded)
    y = np.where(ok, padded, 0.0)
    p = np.arange(padded.size, dtype=np.float64)
    m = ok.astype(np.float64)

    def window_sum(v: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(v)])
        sums: np.ndarray = c[n:] - c[:-n]  # the window starting at each padded index
        return sums

    base = at - 1.0  # slot position = padded index - base
    k = window_sum(m)[at]
    sm_p, sm_pp = window_sum(m * p)[at], window_sum(m * p * p)[at]
    sy, syp, syy = window_sum(y)[at], window_sum(y * p)[at], window_sum(y * y)[at]
    sx = sm_p - base * k
    sxx = sm_pp - 2 * base * sm_p + base * base * k
    sxy = syp - base * sy
    with np.errstate(divide="ignore", invalid="ignore"):
        vx, vy, cxy = k * sxx - sx * sx, k * syy - sy * sy, k * sxy - sx * sy
        slope = cxy / vx
        if what == "slope":
            out = slope
        elif what == "rsquare":
            out = cxy * cxy / (vx * vy)
        else:  # the residual of today's point, at slot n
            out = values - (slope * n + (sy - slope * sx) / k)
    out = np.where(k >= 2, out, np.nan)
    result: np.ndarray = out
    return result


def _regression(args: list[pl.Expr], node: Expr, what: str) -> pl.Expr:
    n = _window(node)
    if n <= 0:
        raise ExpressionError(f"{node}: the window must be at least 1 row")

    fit = _by_numpy(args[0], lambda values, row: _regression_numpy(values, row, n, what))
    if what == "rsquare":  # Qlib's mask: NaN where the window is (nearly) flat
        fit = pl.when(~_ts(_flat(args[0], n)).fill_null(False)).then(fit)
    return fit


def _slots(n: int) -> tuple[pl.Expr, list[int]]:
    """The length of each row's window (shorter at the start of a history) and the offsets,
    oldest first."""
    row = pl.int_range(pl.len(), dtype=pl.Int64)
    return pl.min_horizontal(row + 1, pl.lit(n, pl.Int64)), list(range(n - 1, -1, -1))


def _idx_numpy(values: np.ndarray, row: np.ndarray, n: int, largest: bool) -> np.ndarray:
    """IdxMax/IdxMin over one column holding several instruments (``row``: each row's index
    within its instrument). Each instrument is padded in front with n-1 slots that can never
    win, so that windows never reach into the previous instrument; numpy's argmax then gives
    Qlib's answers, its NaN quirk included."""
    padded, at = _pad(values, row, n, -np.inf if largest else np.inf)
    picked = np.lib.stride_tricks.sliding_window_view(padded, n)[at]
    j = np.argmax(picked, axis=1) if largest else np.argmin(picked, axis=1)
    missing_pad = np.maximum(0, n - 1 - row)
    pos = (j + 1 - missing_pad).astype(np.float64)
    valid = (~np.isnan(picked)).sum(axis=1) - missing_pad  # padding is never NaN
    pos[valid <= 0] = np.nan
    out: np.ndarray = pos
    return out


def _idx(x: pl.Expr, n: int, *, largest: bool) -> pl.Expr:
    """1-based position, from the oldest row of the window, of its largest (smallest) value;
    ties go to the oldest; a window holding a missing value gives that value's position (the
    oldest such), as numpy's argmax does in Qlib."""
    if n == 0:
        raise ExpressionError("IdxMax and IdxMin need a window of at least 1 row")

    return _by_numpy(x, lambda values, row: _idx_numpy(values, row, n, largest))


def _wma(x: pl.Expr, n: int) -> pl.Expr:
    """Qlib's WMA: weights 1..L (newest heaviest) summing to 1 over the window's L slots,
    and then the mean of weight x value over the present values, that is divided by their
    count once more (a quirk of Qlib's that we keep, to match its output)."""
    if n == 0:
        raise ExpressionError("WMA needs a window of at least 1 row")
    length, offsets = _slots(n)
    total = pl.sum_horizontal(
        pl.when(pl.lit(k, pl.Int64) < length).then((length - k) * x.shift(k)).fill_null(0.0)
        for k in offsets
    )
    weight_sum = length * (length + 1) / 2
    return _clean(total / weight_sum / _count_valid(x, n))


def _cs_neutralize(args: list[pl.Expr], node: Expr) -> pl.Expr:
    """The value less its industry's mean on the same date (regression on industry
    dummies)."""
    if node.args[1].op != "$":
        raise ExpressionError(f"{node}: the second argument must be a field, such as $industry")
    return args[0] - args[0].mean().over(BY_DATE, args[1])


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
    "Med": _rolling(_windowed("Med")),
    "Skew": _rolling(_windowed("Skew")),
    "Kurt": _rolling(_windowed("Kurt")),
    "Mad": _rolling(_mad),
    "Quantile": _quantile,
    "Rank": _rolling(_rank),
    "EMA": _ema,
    "Cov": _cov,
    "Corr": _corr,
    "Slope": lambda args, node: _regression(args, node, "slope"),
    "Rsquare": lambda args, node: _regression(args, node, "rsquare"),
    "Resi": lambda args, node: _regression(args, node, "resi"),
    "IdxMax": lambda args, node: _idx(args[0], _window(node), largest=True),
    "IdxMin": lambda args, node: _idx(args[0], _window(node), largest=False),
    "WMA": _rolling(_wma),
    "CSNeutralize": _cs_neutralize,
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

    # A field that names groups (CSNeutralize's industry) keeps its type; the rest are floats.
    groups = {n.args[1].name for e in exprs.values() for n in e.walk() if n.op == "CSNeutralize"}
    lf = frame.lazy().with_columns(
        _clean(pl.col(f).cast(pl.Float64)).alias(f) for f in sorted(fields - groups)
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
