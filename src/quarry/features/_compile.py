"""Compile expression trees into one plan and evaluate it over dense panels.

Every distinct node of all requested expressions is computed once, in dependency order
(``Ref($close, 1)`` once for all of Alpha158), and freed as soon as its last user is done,
so memory holds only the live intermediate panels. Element-wise operators are numpy
expressions over whole panels; window operators are the numba kernels of ``_kernels``;
cross-sectional ones work per day across all instruments. Semantics follow Qlib's, as
pinned down in docs/qlib_operators.md.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl
import pyarrow as pa

from quarry import _lazy
from quarry._memory import reuse_freed_memory, small_pages
from quarry.exceptions import ExpressionError, LookaheadError, UsageError
from quarry.features._expr import Expr, check_limits
from quarry.features._grid import BY_DATE, BY_INSTRUMENT, Grid
from quarry.features._parser import parse
from quarry.features._registry import OPERATORS

if TYPE_CHECKING:
    from quarry.features import _kernels as k
else:  # the numba kernels load (0.2 s, more with their cache) when a plan first computes
    k = _lazy.module("quarry.features._kernels")

__all__ = ["Plan", "as_series", "check_lookahead", "check_name", "compute", "evaluate"]

LABEL = "LABEL0"
LEAVES = ("$", "#", "'")  # a field, a number, a text argument

Value = np.ndarray | float


def check_lookahead(expr: Expr, *, label: bool = False) -> None:
    """Refuse a feature that reads the future: a Ref (or Delta) with a negative shift.

    Labels may look ahead (that is what they are for); features may not. Raised when the
    expression is compiled, before any data is read, naming the offending sub-expression.
    """
    if label:
        return
    for node in expr.walk():
        if node.op in ("Ref", "Delta") and _window(node) < 0:
            raise LookaheadError(
                f"{node} reads {-_window(node)} row(s) into the future, inside the feature "
                f"{expr}; only a label may use a negative Ref or Delta"
            )


def check_name(name: object) -> None:
    """Refuse a feature name that is empty, a key column's, or a label's (``LABEL*``)."""
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"feature name {name!r}: give every feature a name, such as MA5")
    if name.startswith("LABEL") or name in (BY_INSTRUMENT, BY_DATE):
        raise UsageError(
            f"feature name {name!r} is reserved: LABEL* columns are labels (give the label "
            "as the label, e.g. --label) and instrument and date are the keys; rename the feature"
        )


def _expression(e: Expr | str, what: str) -> Expr:
    """Parsed (text) or checked (a tree built in Python) against the size limits."""
    if isinstance(e, str):
        return parse(e, name=what)
    check_limits(e, what)
    return e


def _window(node: Expr, position: int = -1) -> int:
    """The whole-number window argument of a node (its last argument unless told)."""
    arg = node.args[position]
    if arg.op != "#" or not arg.value.is_integer():
        raise ExpressionError(f"{node}: the window must be a whole number, not {arg}")
    return int(arg.value)


# -- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The named outputs, every operator node they need in dependency order, and for each
    node the position of its last user (after which its panel is dropped)."""

    outputs: dict[str, Expr]
    nodes: tuple[Expr, ...]
    last_use: dict[Expr, int]
    # Extra inputs of a node beyond its arguments: the rolling stds behind Corr's and
    # Rsquare's flat-window mask, shared with any Std the features ask for themselves.
    extras: dict[Expr, tuple[Expr, ...]]
    # Quantiles (and medians) of one series over one window, computed in one pass.
    fused: dict[Expr, tuple[Expr, ...]]

    @classmethod
    def build(cls, features: Mapping[str, Expr | str], *, label: Expr | str | None = None) -> Plan:
        """Parse, check (names, size, look-ahead, operators, windows) and order ``features``
        (plus the label as ``LABEL0``) before any data is touched.

        A feature may not be named like a label (``LABEL*``, which training reads as labels)
        or a key column (instrument, date), which its column would replace.
        """
        outputs: dict[str, Expr] = {}
        for name, e in features.items():
            check_name(name)
            outputs[name] = _expression(e, f"feature {name!r}")
            check_lookahead(outputs[name])
        if label is not None:
            outputs[LABEL] = _expression(label, "label")
        nodes: dict[Expr, None] = {}
        extras: dict[Expr, tuple[Expr, ...]] = {}
        for e in outputs.values():
            for node in e.walk():
                if node.op in LEAVES:
                    continue
                if node.op not in OPERATORS or node.op not in _BUILD:
                    raise ExpressionError(f"{node}: operator {node.op} is not supported yet")
                _CHECK.get(node.op, _no_check)(node)
                if node.op in ("Corr", "Rsquare"):
                    window = node.args[-1]
                    extras[node] = tuple(Expr("Std", (a, window)) for a in node.args[:-1])
                    for std in extras[node]:
                        nodes.update(dict.fromkeys(n for n in std.walk() if n.op not in LEAVES))
                nodes[node] = None
        order = tuple(nodes)
        last_use: dict[Expr, int] = {}
        for i, node in enumerate(order):
            for a in (*node.args, *extras.get(node, ())):
                last_use[a] = i
        by_window: dict[tuple[Expr, int], list[Expr]] = {}
        for node in order:
            if node.op in ("Quantile", "Med"):
                by_window.setdefault((node.args[0], _window(node, 1)), []).append(node)
        fused = {n: tuple(group) for group in by_window.values() for n in group}
        return cls(outputs, order, last_use, extras, fused)

    def inputs(self, node: Expr) -> tuple[Expr, ...]:
        """The nodes a node reads: its arguments and its extras."""
        return (*node.args, *self.extras.get(node, ()))

    @property
    def fields(self) -> set[str]:
        """Every field the outputs read, group fields included."""
        return {n.name for e in self.outputs.values() for n in e.walk() if n.op == "$"}

    @property
    def group_fields(self) -> set[str]:
        """Fields read as group labels (CSNeutralize's second argument), not as numbers."""
        return {n.args[1].name for n in self.nodes if n.op == "CSNeutralize"}

    @property
    def cross_sectional(self) -> list[Expr]:
        """The cross-sectional nodes, each after every one it depends on."""
        return [n for n in self.nodes if OPERATORS[n.op].kind == "cross"]

    def check_fields(self, have: Sequence[str]) -> None:
        """Name the closest column for a field the data does not have."""
        missing = sorted(f for f in self.fields if f not in have)
        if not missing:
            return
        cols = [c for c in have if c not in (BY_INSTRUMENT, BY_DATE)]
        hints = []
        for m in missing:
            close = difflib.get_close_matches(m, cols, 1)
            hints.append(f"${m}" + (f" (did you mean ${close[0]}?)" if close else ""))
        raise ExpressionError(
            f"unknown field {', '.join(hints)}; fields: {', '.join('$' + h for h in cols)}"
        )


# -- evaluation ----------------------------------------------------------------------------------


def state_width(node: Expr, kernel: str) -> int:
    """How many numbers a resumable kernel keeps per instrument for ``node``: a fixed count
    for the running sums, the count and sorted values of the window for the quantiles."""
    return _window(node, 1) + 1 if kernel == "quantile" else k.STATE_WIDTH[kernel]


@dataclass
class _Chunk:
    """Instruments lo..hi of a grid: their field panels, histories and, for nodes computed
    beforehand over all instruments (cross-sectional ones, when chunked), their panels."""

    grid: Grid
    lo: int
    hi: int
    known: Mapping[Expr, np.ndarray]
    _history: np.ndarray | None = None
    _outside: np.ndarray | None = None
    pool: list[np.ndarray] = field(default_factory=list)  # panels free for reuse
    # The running state a resumable kernel carries from the last bar, per node: given by a
    # live stream (``_online``), whose chunks compute each such node's last column only.
    states: Mapping[Expr, np.ndarray] | None = None
    # Nodes of which a live stream reads the newest column alone: window kernels that can
    # compute it without walking the panel do (``_kernels``' ``last``), and shifts.
    newest: frozenset[Expr] = frozenset()
    # A live stream keeps each result's newest column alone: column-major panels ("F") make
    # that column one contiguous read.
    order: Literal["C", "F"] = "C"

    def state(self, node: Expr, kernel: str) -> tuple[np.ndarray, bool]:
        """The state the kernel of ``node`` resumes from and whether it resumes (it does
        when the stream keeps one for the node), or an empty one over whole histories."""
        if self.states is not None and node in self.states:
            held = self.states[node]
            assert held.shape == (self.shape[0], state_width(node, kernel))
            return held, True
        return k.NO_STATE, False

    @property
    def start(self) -> np.ndarray:
        return self.grid.start[self.lo : self.hi]

    @property
    def end(self) -> np.ndarray:
        return self.grid.end[self.lo : self.hi]

    @property
    def phase(self) -> int:
        return self.grid.phase

    @property
    def span(self) -> tuple[np.ndarray, np.ndarray]:
        return self.start, self.end

    @property
    def shape(self) -> tuple[int, int]:
        return self.hi - self.lo, self.grid.shape[1]

    def alloc(self) -> np.ndarray:
        """A panel to write a result into: a freed one when there is one (reusing memory
        already paged in is several times cheaper than touching fresh memory)."""
        return self.pool.pop() if self.pool else np.empty(self.shape, order=self.order)

    def release(self, panel: np.ndarray) -> None:
        contiguous = panel.flags.c_contiguous if self.order == "C" else panel.flags.f_contiguous
        if panel.shape == self.shape and panel.dtype == np.float64 and contiguous:
            self.pool.append(panel)

    @property
    def history(self) -> np.ndarray:
        if self._history is None:
            self._history = self.grid.in_history(self.lo, self.hi)
        return self._history

    @property
    def whole(self) -> bool:
        return self.lo == 0 and self.hi == self.grid.shape[0]

    def field(self, name: str) -> np.ndarray:
        return self.grid.fields[name][self.lo : self.hi]

    def full(self, v: Value) -> np.ndarray:
        """A panel of v (a number becomes a constant panel within the histories)."""
        if isinstance(v, np.ndarray):
            return v
        return np.where(self.history, v, np.nan)

    @property
    def outside(self) -> np.ndarray:
        if self._outside is None:
            self._outside = ~self.history
        return self._outside

    def mask(self, v: np.ndarray) -> np.ndarray:
        """NaN outside the histories, written into ``v`` (a panel just computed), for
        operators that turn NaN into a number and for shifts that move values there."""
        if v.shape != self.shape or v.dtype != np.float64:
            return np.where(self.history, v, np.nan)
        np.copyto(v, np.nan, where=self.outside)
        return v


def evaluate(
    plan: Plan,
    grid: Grid,
    *,
    lo: int = 0,
    hi: int | None = None,
    known: Mapping[Expr, np.ndarray] | None = None,
    targets: Sequence[Expr] | None = None,
    sink: Callable[[Expr, np.ndarray], None],
) -> None:
    """Evaluate the plan over instruments lo..hi, handing each target's panel (the plan's
    outputs unless told) to ``sink`` as soon as it is computed."""
    chunk = _Chunk(grid, lo, grid.shape[0] if hi is None else hi, known or {})
    wanted = set(plan.outputs.values() if targets is None else targets)
    needed = _needed(plan, wanted, chunk.known)
    values: dict[Expr, Value] = {}

    def value(node: Expr) -> Value:
        if node.op == "#":
            return node.value
        if node.op == "'":
            return np.nan  # a text argument: its operator reads it from the node
        if node.op == "$":
            return chunk.field(node.name)
        return values[node]

    stash: dict[Expr, np.ndarray] = {}  # results computed early, with a fused sibling
    owned: set[Expr] = set()  # nodes whose panel no other live node shares
    for e in wanted:  # a bare field or number as an output
        if e.op in LEAVES:
            sink(e, chunk.full(value(e)))
    with np.errstate(all="ignore"), small_pages():
        for i, node in enumerate(plan.nodes):
            if node not in needed:
                continue
            if node in chunk.known:
                values[node] = chunk.known[node][lo : chunk.hi]
            elif node in stash:
                values[node] = stash.pop(node)
            elif node in plan.fused:
                group = [n for n in plan.fused[node] if n in needed and n not in chunk.known]
                panels = _quantiles(group, chunk.full(value(node.args[0])), chunk)
                values[node] = panels.pop(node)
                stash.update(panels)
            else:
                args = [value(a) for a in plan.inputs(node)]
                spare = _spare(plan, node, i, values, owned)
                if spare is not None:  # write over a panel nothing needs after this node
                    values[node] = _UFUNC[node.op](*args, out=values[spare])
                    owned.discard(spare)
                    owned.add(node)
                elif node.op in _UFUNC and any(isinstance(a, np.ndarray) for a in args):
                    values[node] = _UFUNC[node.op](*args, out=chunk.alloc())
                    owned.add(node)
                else:
                    result = values[node] = _BUILD[node.op](args, node, chunk)
                    # A fresh panel is this node's alone; one that shares memory with an
                    # input (Ref(x, 0) is x itself) is not.
                    if isinstance(result, np.ndarray) and not any(
                        isinstance(a, np.ndarray) and np.may_share_memory(result, a) for a in args
                    ):
                        owned.add(node)
            if node in wanted:
                sink(node, chunk.full(values[node]))
                if node not in plan.last_use:  # an output nothing else reads: free it now
                    panel = values.pop(node)
                    if node in owned and isinstance(panel, np.ndarray):
                        owned.discard(node)
                        chunk.release(panel)
            for a in plan.inputs(node):
                if plan.last_use.get(a) == i and a in values:
                    panel = values.pop(a)  # its last user is done: free the panel
                    if a in owned and isinstance(panel, np.ndarray):
                        owned.discard(a)
                        if values.get(node) is not panel:  # not written over in place
                            chunk.release(panel)


def _spare(
    plan: Plan, node: Expr, i: int, values: Mapping[Expr, Value], owned: set[Expr]
) -> Expr | None:
    """An argument of an element-wise node whose panel can take the result: computed here
    (not a field or a view), shared with no other node, and last used by this node. Writing
    in place spares allocating (and page-faulting) a fresh panel per operation."""
    if node.op not in _UFUNC:
        return None
    for a in node.args:
        if a in owned and plan.last_use.get(a) == i and isinstance(values.get(a), np.ndarray):
            return a
    return None


def _needed(plan: Plan, wanted: set[Expr], known: Mapping[Expr, np.ndarray]) -> set[Expr]:
    """The operator nodes the targets depend on, stopping at nodes already known."""
    needed: set[Expr] = set()
    stack = [e for e in wanted if e.op not in LEAVES]
    while stack:
        node = stack.pop()
        if node in needed:
            continue
        needed.add(node)
        if node not in known:
            stack.extend(a for a in plan.inputs(node) if a.op not in LEAVES)
    return needed


def compute(
    frame: pl.DataFrame,
    features: Mapping[str, Expr | str],
    *,
    label: Expr | str | None = None,
) -> pl.DataFrame:
    """Evaluate named expressions on a long frame with columns instrument, date and fields.

    Returns the frame's instrument and date, in its row order, and one Float64 column per
    feature (missing values null), plus ``LABEL0`` when a label is given. Features that
    read the future raise LookaheadError before any work. The whole frame is held in
    memory; ``quarry.features.materialize`` writes Parquet in bounded memory instead.
    """
    plan = Plan.build(features, label=label)
    plan.check_fields(frame.columns)
    reuse_freed_memory()
    groups = plan.group_fields
    grid = Grid.from_frame(frame, sorted(plan.fields - groups), groups=sorted(groups))
    by_expr: dict[Expr, list[str]] = {}
    for name, e in plan.outputs.items():
        by_expr.setdefault(e, []).append(name)
    columns: dict[str, pl.Series] = {}

    inst, when = grid.cells()
    cells = inst * grid.shape[1] + when

    def sink(node: Expr, panel: np.ndarray) -> None:
        series = as_series(np.take(panel, cells))
        for name in by_expr[node]:
            columns[name] = series.alias(name)

    evaluate(plan, grid, sink=sink)
    return frame.select(BY_INSTRUMENT, BY_DATE).with_columns(columns[name] for name in plan.outputs)


def as_series(values: np.ndarray, name: str = "") -> pl.Series:
    """A float column over ``values`` without copying them, NaN read as missing (null).

    Wrapping the numpy buffer in an arrow array with a validity bitmap costs a bitmap; the
    usual ``nan_to_null`` copies every value into fresh memory, which at hundreds of
    columns was a fifth of Alpha158's time (new memory is paid for in page faults).
    """
    valid = ~np.isnan(values)
    missing = values.size - int(np.count_nonzero(valid))
    arrow_type = pa.float32() if values.dtype == np.float32 else pa.float64()
    buffers = [pa.py_buffer(np.packbits(valid, bitorder="little")) if missing else None]
    data = pa.Array.from_buffers(
        arrow_type, values.size, [*buffers, pa.py_buffer(values)], null_count=missing
    )
    series = pl.Series(name, data)
    return series


# -- operators ------------------------------------------------------------------------------------

Build = Callable[[list[Value], Expr, _Chunk], Value]


def _no_check(node: Expr) -> None:
    return None


def _whole_window(node: Expr) -> None:
    _window(node)


def _positive_window(node: Expr) -> None:
    if _window(node) <= 0:
        raise ExpressionError(f"{node}: the window must be at least 1 row")


def _window_or_history(node: Expr) -> None:
    if _window(node) < 0:
        raise ExpressionError(f"{node}: a window cannot be negative (0 means all history)")


def _check_quantile(node: Expr) -> None:
    if _window(node, 1) <= 0:
        raise ExpressionError(f"{node}: the window must be at least 1 row")
    q = node.args[2]
    if q.op != "#" or not 0 <= q.value <= 1:
        raise ExpressionError(f"{node}: the quantile must be a number between 0 and 1")


def _check_span(node: Expr) -> None:
    span = node.args[1]
    if span.op != "#" or span.value <= 0:
        raise ExpressionError(f"{node}: the span must be a positive number")


def _check_mask(node: Expr) -> None:
    if node.args[1].op != "'":
        raise ExpressionError(
            f'{node}: the second argument must be an instrument code, such as "SPY"'
        )


def _check_group(node: Expr) -> None:
    if node.args[1].op != "$":
        raise ExpressionError(f"{node}: the second argument must be a field, such as $industry")


_CHECK: dict[str, Callable[[Expr], None]] = {
    **dict.fromkeys(["Mean", "Sum", "Var", "Std", "Count", "Max", "Min"], _window_or_history),
    **dict.fromkeys(
        "Med Skew Kurt Mad Rank IdxMax IdxMin WMA Slope Rsquare Resi Corr Cov".split(),
        _positive_window,
    ),
    "Ref": _whole_window,
    "Delta": _whole_window,
    "Quantile": _check_quantile,
    "EMA": _check_span,
    "CSNeutralize": _check_group,
    "Mask": _check_mask,
}


def _length(node: Expr, chunk: _Chunk, position: int = -1) -> int:
    """The window in rows: N, or the whole calendar for N == 0 (an expanding window)."""
    n = _window(node, position)
    return n if n > 0 else chunk.shape[1]


def _sums(what: int) -> Build:
    def build(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
        x = chunk.full(args[0])
        n = _length(node, chunk)
        state, resume = chunk.state(node, "sum")
        return k.rolling_sum(x, n, *chunk.span, what, chunk.phase, state, resume, chunk.alloc())  # type: ignore[no-any-return]

    return build


def _var(std: bool) -> Build:
    def build(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
        x = chunk.full(args[0])
        n = _length(node, chunk)
        state, resume = chunk.state(node, "var")
        return k.rolling_var(x, n, *chunk.span, std, chunk.phase, state, resume, chunk.alloc())  # type: ignore[no-any-return]

    return build


def _extreme(largest: bool) -> Build:
    def build(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
        x = chunk.full(args[0])
        return k.rolling_extreme(x, _length(node, chunk), *chunk.span, largest, chunk.alloc())  # type: ignore[no-any-return]

    return build


def _idx(largest: bool) -> Build:
    def build(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
        x = chunk.full(args[0])
        return k.idx_extreme(x, _window(node), *chunk.span, largest, chunk.alloc())  # type: ignore[no-any-return]

    return build


def _quantiles(group: list[Expr], x: np.ndarray, chunk: _Chunk) -> dict[Expr, np.ndarray]:
    """Quantile and Med nodes over the same series and window, in one pass."""
    qs = np.array([0.5 if n.op == "Med" else n.args[2].value for n in group])
    last = all(n in chunk.newest for n in group)
    state, resume = chunk.state(group[0], "quantile")  # a stream keeps the group's window
    n = _window(group[0], 1)
    panels = k.rolling_quantile(x, n, chunk.start, chunk.end, qs, last, state, resume)
    return {n: panels[j] for j, n in enumerate(group)}


def _rank(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    last = node in chunk.newest
    return k.rolling_rank(chunk.full(args[0]), _window(node), *chunk.span, last, chunk.alloc())  # type: ignore[no-any-return]


def _shape(what: int) -> Build:
    def build(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
        x = chunk.full(args[0])
        return k.rolling_shape(x, _window(node), *chunk.span, what, chunk.alloc())  # type: ignore[no-any-return]

    return build


_FLAT = 2e-5  # Qlib masks Corr and Rsquare where a rolling std is this close to zero


def _regression(what: int) -> Build:
    def build(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
        x = chunk.full(args[0])
        state, resume = chunk.state(node, "regression")
        fit: np.ndarray = k.rolling_regression(
            x, _window(node), *chunk.span, what, chunk.phase, state, resume, chunk.alloc()
        )
        if what == 1:  # Qlib's mask: NaN where the window is (nearly) flat
            _mask_flat(fit, resume, args[2])  # arg 2 is the extra: the rolling std
        return fit

    return build


def _flat(std: Value) -> np.ndarray:
    """Where a rolling std (an extra input) is within Qlib's tolerance of zero; a std of
    fewer than two values (NaN) is not flat."""
    flat: np.ndarray = np.abs(std) <= _FLAT
    return flat


def _mask_flat(out: np.ndarray, resume: bool, *stds: Value) -> None:
    """NaN in ``out`` where any of ``stds`` is flat; a kernel that resumed computed its last
    column alone, and only that column is masked."""
    if resume:
        out, stds = out[:, -1:], tuple(np.asarray(s)[:, -1:] for s in stds)
    out[np.logical_or.reduce([_flat(s) for s in stds])] = np.nan


def _pair(what: int) -> Build:
    def build(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
        a, b, n = chunk.full(args[0]), chunk.full(args[1]), _window(node)
        state, resume = chunk.state(node, "corr_cov")
        out: np.ndarray = k.rolling_corr_cov(
            a, b, n, *chunk.span, what, chunk.phase, state, resume, chunk.alloc()
        )
        if what == 1:  # args 3 and 4 are the extras: each side's rolling std
            _mask_flat(out, resume, args[3], args[4])
        return out

    return build


def _ema(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    span = node.args[1].value
    alpha = span if span < 1 else 2.0 / (span + 1.0)  # Qlib reads a fraction as alpha itself
    return k.ewm_mean(chunk.full(args[0]), alpha, *chunk.span, chunk.alloc())  # type: ignore[no-any-return]


def _shift(x: Value, n: int, chunk: _Chunk) -> Value:
    """x moved n days later (n < 0: earlier). Cells before an instrument's history are NaN,
    so a shift never brings in another instrument's or an earlier listing's values."""
    if not isinstance(x, np.ndarray) or n == 0:
        return x
    out = chunk.alloc()
    if n > 0:
        out[:, :n] = np.nan
        out[:, n:] = x[:, :-n]
    else:
        out[:, n:] = np.nan
        out[:, :n] = x[:, -n:]
    return chunk.mask(out)


def _newest_shift(x: Value, n: int, node: Expr, chunk: _Chunk) -> Value | None:
    """For a live stream that reads the newest column alone (``chunk.newest``): x's column
    n bars back, as (instruments, 1), a view. The newest column lies in every history, so
    there is nothing to mask. None when the general shift is needed."""
    if node not in chunk.newest or not isinstance(x, np.ndarray) or n <= 0:
        return None
    cols = x.shape[1]
    return x[:, cols - 1 - n : cols - n]


def _ref(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    n = _window(node)
    newest = _newest_shift(args[0], n, node, chunk)
    return _shift(args[0], n, chunk) if newest is None else newest


def _delta(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    n, x = _window(node), args[0]
    newest = _newest_shift(x, n, node, chunk)
    if newest is None:
        return x - _shift(x, n, chunk)
    return x[:, -1:] - newest  # type: ignore[index]


def _need_whole(node: Expr, chunk: _Chunk) -> None:
    if not chunk.whole:
        raise RuntimeError(f"{node} needs every instrument at once; compute it beforehand")


def _cs_rank(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    _need_whole(node, chunk)
    return k.cs_rank(chunk.full(args[0]), chunk.alloc())  # type: ignore[no-any-return]


def _cs_zscore(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    _need_whole(node, chunk)
    x = chunk.full(args[0])
    with warnings.catch_warnings():  # a day with fewer than two values gives NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        std = np.nanstd(x, axis=0, ddof=1)
    z: np.ndarray = (x - mean) / std
    return z


def _cs_demean(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    _need_whole(node, chunk)
    x = chunk.full(args[0])
    with warnings.catch_warnings():  # a day with no value gives NaN, quietly
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
    demeaned: np.ndarray = x - mean
    return demeaned


def _cs_neutralize(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    _need_whole(node, chunk)
    name = node.args[1].name
    group = chunk.field(name)
    groups = chunk.grid.groups.get(name)
    if groups is None:
        raise RuntimeError(f"{name} was not laid out as a group field")
    return k.cs_neutralize(chunk.full(args[0]), group, groups, chunk.alloc())  # type: ignore[no-any-return]


def _mask(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    """Qlib's Mask(x, "CODE"): x as computed for instrument CODE, on each instrument's own
    days (not a masking operation, despite the name)."""
    _need_whole(node, chunk)
    code = node.args[1].name
    names = chunk.grid.instruments.cast(pl.String)
    where = names.index_of(code)
    if where is None:
        same_case = [n for n in names.to_list() if n.lower() == code.lower()]
        close = same_case or difflib.get_close_matches(code, names.to_list(), 1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ExpressionError(f"{node}: no instrument {code!r} in the data{hint}")
    out = chunk.alloc()
    out[:] = chunk.full(args[0])[where]
    return chunk.mask(out)


def _binary(fn: Callable[[Value, Value], Value]) -> Build:
    return lambda args, node, chunk: fn(args[0], args[1])


def _truth(fn: Callable[[Value, Value], Value]) -> Build:
    """A comparison or logical operator: 1.0 or 0.0 within the histories. A comparison with
    a missing value is false (true for !=), as in numpy and so Qlib."""

    def build(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
        out = chunk.alloc()
        out[...] = fn(args[0], args[1])
        return chunk.mask(out)

    return build


def _if(args: list[Value], node: Expr, chunk: _Chunk) -> Value:
    # A missing condition counts as true, as numpy's where does with NaN in Qlib.
    return chunk.mask(np.where(np.asarray(args[0]) != 0, args[1], args[2]))


# Element-wise operators that are one numpy ufunc, so that they can write in place.
_UFUNC: dict[str, np.ufunc] = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Greater": np.maximum,  # a missing side makes the result missing
    "Less": np.minimum,
    "Neg": np.negative,
    "Abs": np.absolute,
    "Log": np.log,
    "Sign": np.sign,
}

_BUILD: dict[str, Build] = {
    "Add": _binary(lambda a, b: a + b),
    "Sub": _binary(lambda a, b: a - b),
    "Mul": _binary(lambda a, b: a * b),
    "Div": _binary(lambda a, b: np.divide(a, b)),
    "Power": lambda args, node, chunk: chunk.mask(np.power(args[0], args[1])),
    "Gt": _truth(lambda a, b: np.greater(a, b)),
    "Ge": _truth(lambda a, b: np.greater_equal(a, b)),
    "Lt": _truth(lambda a, b: np.less(a, b)),
    "Le": _truth(lambda a, b: np.less_equal(a, b)),
    "Eq": _truth(lambda a, b: np.equal(a, b)),
    "Ne": _truth(lambda a, b: np.not_equal(a, b)),
    "And": _truth(lambda a, b: np.logical_and(np.not_equal(a, 0), np.not_equal(b, 0))),
    "Or": _truth(lambda a, b: np.logical_or(np.not_equal(a, 0), np.not_equal(b, 0))),
    # np.maximum / np.minimum: a missing side makes the result missing.
    "Greater": _binary(lambda a, b: np.maximum(a, b)),
    "Less": _binary(lambda a, b: np.minimum(a, b)),
    "Neg": lambda args, node, chunk: -args[0],
    "Abs": lambda args, node, chunk: np.abs(args[0]),
    "Log": lambda args, node, chunk: np.log(args[0]),
    "Sign": lambda args, node, chunk: np.sign(args[0]),
    "Not": lambda args, node, chunk: chunk.mask(np.equal(args[0], 0).astype(np.float64)),
    "If": _if,
    "Ref": _ref,
    "Delta": _delta,
    "Count": _sums(0),
    "Sum": _sums(1),
    "Mean": _sums(2),
    "Var": _var(std=False),
    "Std": _var(std=True),
    "Max": _extreme(largest=True),
    "Min": _extreme(largest=False),
    "Rank": _rank,
    # Evaluated with their fused siblings (see evaluate); these serve a lone one.
    "Med": lambda args, node, chunk: _quantiles([node], chunk.full(args[0]), chunk)[node],
    "Quantile": lambda args, node, chunk: _quantiles([node], chunk.full(args[0]), chunk)[node],
    "Skew": _shape(0),
    "Kurt": _shape(1),
    "Mad": lambda args, node, chunk: k.rolling_mad(
        chunk.full(args[0]), _window(node), *chunk.span, chunk.alloc()
    ),
    "WMA": lambda args, node, chunk: k.rolling_wma(
        chunk.full(args[0]), _window(node), *chunk.span, chunk.alloc()
    ),
    "EMA": _ema,
    "Cov": _pair(0),
    "Corr": _pair(1),
    "Slope": _regression(0),
    "Rsquare": _regression(1),
    "Resi": _regression(2),
    "IdxMax": _idx(largest=True),
    "IdxMin": _idx(largest=False),
    "CSRank": _cs_rank,
    "CSZScore": _cs_zscore,
    "CSDemean": _cs_demean,
    "CSNeutralize": _cs_neutralize,
    "Mask": _mask,
}
