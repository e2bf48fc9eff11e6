"""Features of the newest bar, updated one bar at a time, from research's own plan and kernels.

A live stream cannot recompute every instrument's whole history on each bar, and must not
compute its features with a second, hand-written copy of each operator (the skew between
research and production that the live teams warn about). Every operator of the language
except an expanding window (``Mean(x, 0)``) and ``EMA`` reads a bounded number of past rows,
so a feature's value on the newest bar depends only on the last ``depth`` bars, the plan's
lookback (``Corr(x, y, 60)`` of ``Ref($close, 1)`` reads 61). ``OnlineFeatures`` keeps those
bars per instrument and, on each bar, evaluates the very same ``Plan`` with the very same
kernels over that window, keeping only its last row: the cost per bar is fixed by the
window, not by how long the stream has run.

The running windows (sums, moments, co-moments, regressions) go further: their kernels
resume from a running state kept per instrument (``_kernels``' note), so such a node costs
O(1) per instrument a bar and reads only the N + 1 newest values of its inputs. A restart
replays the last ``depth`` bars (``lookback`` still counts 2N - 2 rows for them): a state
rebuilt from nothing is exact from the first anchor in that replay on, and the replay holds
one, with the window before it.

The window is laid out as research lays out its panels (``_grid``): one row per instrument,
one column per bar time seen, NaN for an instrument that had no bar at a time within its
history (a suspension), and each instrument's history starting at its first bar. An
instrument absent from a bar gets no value for that bar, as in research, where only
cells with a bar are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from quarry.exceptions import DataError, ExpressionError, UsageError
from quarry.features._compile import _BUILD, Plan, Value, _Chunk, _quantiles, _window, as_series
from quarry.features._expr import Expr
from quarry.features._grid import BY_DATE, BY_INSTRUMENT, Grid
from quarry.features._kernels import STATE_WIDTH
from quarry.features._registry import OPERATORS

__all__ = ["OnlineFeatures", "lookback"]

# Operators whose value depends on every earlier row: no bounded window reproduces them.
_UNBOUNDED = ("EMA",)
# Operators whose kernels keep running sums, rebuilt from the window at every N-th row: a
# value reads its last 2N - 1 rows (``_kernels``' note), not N.
_RUNNING = ("Count", "Sum", "Mean", "Var", "Std", "Cov", "Corr", "Slope", "Rsquare", "Resi")


def _reach(node: Expr) -> int:
    """How many columns before its first output column a node reads of its inputs.

    A window of N rows reads N - 1 more (2N - 2 for the kernels with running sums, which
    rebuild them every N rows); ``Ref(x, N)`` and ``Delta(x, N)`` read N more. Raises
    ExpressionError, naming the node, for an operator with no bounded reach.
    """
    kind = OPERATORS[node.op].kind
    if node.op in _UNBOUNDED:
        raise ExpressionError(
            f"{node} depends on every earlier bar, so a stream cannot update it from a "
            "bounded window; use a windowed operator such as Mean or WMA instead"
        )
    if node.op == "Delta":
        return max(_window(node), 0)
    if kind in ("rolling", "pair"):
        n = _window(node, 1 if node.op == "Quantile" else -1)
        if n == 0:
            raise ExpressionError(
                f"{node} is an expanding window (N = 0) over all history, which a "
                "stream cannot update from a bounded window; give a window of N rows"
            )
        return 2 * (n - 1) if node.op in _RUNNING else n - 1
    if kind == "ref":
        return max(_window(node), 0)
    return 0


# The kernel (and the width of its state) of each operator whose kernel resumes.
_STATE = {
    **dict.fromkeys(("Count", "Sum", "Mean"), "sum"),
    **dict.fromkeys(("Var", "Std"), "var"),
    **dict.fromkeys(("Cov", "Corr"), "corr_cov"),
    **dict.fromkeys(("Slope", "Rsquare", "Resi"), "regression"),
}


# Window operators whose kernels can compute the newest column alone, from its window.
_NEWEST = ("Max", "Min", "IdxMax", "IdxMin", "Rank", "Quantile", "Med")


def _resumes(node: Expr, need: int) -> bool:
    """Whether a stream keeps the node's running state from bar to bar: a running window
    whose users read its newest value alone. Its kernel then reads the N + 1 newest values of
    its inputs (the one leaving the window, or at an anchor the window itself)."""
    return node.op in _STATE and need == 1 and _window(node) > 0


def needs(plan: Plan, resuming: bool = False) -> dict[Expr, int]:
    """How many of the newest columns of each node (fields included) the outputs' newest
    column depends on: 1 for an output; an argument's need is its user's plus the user's
    reach. The extras (Corr's flat-window stds) are needed where their node's outputs are.
    With ``resuming``, a node whose running state is kept (``_resumes``) reaches N columns
    back, not 2N - 2."""
    need: dict[Expr, int] = {e: 1 for e in plan.outputs.values()}
    for node in reversed(plan.nodes):
        mine = need.get(node, 0)
        if not mine:
            continue
        reach = mine + (_window(node) if resuming and _resumes(node, mine) else _reach(node))
        for a in node.args:
            if a.op in ("#", "'"):
                continue
            need[a] = max(need.get(a, 0), reach)
        for x in plan.extras.get(node, ()):
            need[x] = max(need.get(x, 0), mine)
    return need


def lookback(plan: Plan) -> int:
    """How many rows before the newest one the plan's outputs read (0: the row alone)."""
    for node in plan.nodes:
        _reach(node)  # refuse what no window can update, even if no output needs it
    return max(needs(plan).values(), default=1) - 1


@dataclass
class _Window:
    """The last ``depth`` bars of every instrument seen, per field, the newest bar last.

    Each field is a ring twice as wide as the window, every bar written at two places
    ``depth`` apart, so that the window is always one contiguous slice of the ring: a new
    bar costs one column, not a shift of the whole window (at 16,000 instruments and Alpha158's
    121 bars, the shift alone took 37 ms a bar)."""

    depth: int
    fields: tuple[str, ...]
    names: list[str]
    index: dict[str, int]
    first: np.ndarray  # each instrument's first bar, as a count of bars since the stream began
    rings: dict[str, np.ndarray]
    at: int = 0  # the newest bar's column in the ring's first half

    @classmethod
    def empty(cls, depth: int, fields: Sequence[str]) -> _Window:
        return cls(
            depth,
            tuple(fields),
            [],
            {},
            np.zeros(0, dtype=np.int64),
            {f: np.full((0, 2 * depth), np.nan) for f in fields},
        )

    def rows_of(self, instruments: Sequence[str], bar: int) -> np.ndarray:
        """Each instrument's row, adding rows (history starting at ``bar``) for new ones."""
        new = [s for s in dict.fromkeys(instruments) if s not in self.index]
        if new:
            for s in new:
                self.index[s] = len(self.names)
                self.names.append(s)
            self.first = np.concatenate([self.first, np.full(len(new), bar, dtype=np.int64)])
            blank = np.full((len(new), 2 * self.depth), np.nan)
            self.rings = {f: np.concatenate([p, blank]) for f, p in self.rings.items()}
        return np.fromiter((self.index[s] for s in instruments), np.int64, len(instruments))

    def advance(self) -> None:
        """Open an empty (NaN) column for the new bar; the oldest falls out of the window."""
        self.at = (self.at + 1) % self.depth
        for ring in self.rings.values():
            ring[:, self.at] = np.nan
            ring[:, self.at + self.depth] = np.nan

    def put(self, field: str, rows: np.ndarray, values: np.ndarray) -> None:
        """The newest bar's values of ``rows``."""
        ring = self.rings[field]
        ring[rows, self.at] = values
        ring[rows, self.at + self.depth] = values

    def panel(self, field: str) -> np.ndarray:
        """The window of a field: (instruments, depth), the newest bar last (a view)."""
        return self.rings[field][:, self.at + 1 : self.at + 1 + self.depth]


class OnlineFeatures:
    """Named feature expressions, updated bar by bar for every instrument.

    ``update(time, bars)`` takes one bar time and the bars of the instruments that updated
    (a frame with column instrument and the fields the features read) and returns those
    instruments' feature values at that time, equal to what ``quarry.features.compute``
    gives for that row over all the bars so far.
    """

    def __init__(self, features: Mapping[str, Expr | str]) -> None:
        self.plan = Plan.build(features)
        if self.plan.group_fields:
            raise UsageError(
                "a stream cannot compute group fields yet (CSNeutralize): "
                f"{', '.join(sorted(self.plan.group_fields))}"
            )
        self.names = list(self.plan.outputs)
        self.depth = lookback(self.plan) + 1
        self.fields = tuple(sorted(self.plan.fields))
        self._window = _Window.empty(self.depth, self.fields)
        self.bars = 0  # bar times seen
        self.last_time: object | None = None
        by_expr: dict[Expr, list[str]] = {}
        for name, e in self.plan.outputs.items():
            by_expr.setdefault(e, []).append(name)
        self._by_expr = by_expr
        self._need = needs(self.plan, resuming=True)
        # the running state of each node that keeps one, a row per instrument (``_kernels``)
        self._resuming = {n for n in self.plan.nodes if _resumes(n, self._need.get(n, 0))}
        self._states: dict[Expr, np.ndarray] = {}
        # the window nodes whose kernels compute their newest column alone (``_kernels``)
        self._newest = frozenset(
            n for n in self.plan.nodes if n.op in _NEWEST and self._need.get(n, 0) == 1
        )
        self._names: pl.Series | None = None  # the instruments as a series (Mask reads it)

    @property
    def instruments(self) -> list[str]:
        return list(self._window.names)

    @property
    def first_bars(self) -> dict[str, int]:
        """Each instrument's first bar, numbered from the stream's first (0)."""
        return dict(zip(self._window.names, self._window.first.tolist(), strict=True))

    def resume(self, bars: int, first: Mapping[str, int]) -> None:
        """Continue a stream that had seen ``bars`` bar times, whose instruments began at
        the bars ``first`` gives: the next ``update`` is bar number ``bars``. Replaying the
        last ``depth`` bars after this rebuilds the state exactly, anchors included."""
        if self.bars:
            raise RuntimeError("resume() is for a fresh OnlineFeatures")
        names = sorted(first, key=lambda s: (first[s], s))
        self._window.rows_of(names, 0)
        self._window.first = np.fromiter((first[s] for s in names), np.int64, len(names))
        self.bars = bars

    def update(self, time: object, bars: pl.DataFrame) -> pl.DataFrame:
        """The features at ``time`` of the instruments in ``bars``, in their order.

        Bar times must increase; an instrument may appear once per bar.
        """
        if self.last_time is not None and not time > self.last_time:  # type: ignore[operator]
            raise DataError(
                f"bar time {time} does not come after the last one ({self.last_time}); "
                "bars must arrive in time order"
            )
        self.plan.check_fields(bars.columns)
        if bars[BY_INSTRUMENT].is_duplicated().any():
            dup = bars.filter(pl.col(BY_INSTRUMENT).is_duplicated())[BY_INSTRUMENT][0]
            raise DataError(f"the bar at {time} repeats instrument {dup!r}: give it once")
        names = bars[BY_INSTRUMENT].cast(pl.String).to_list()
        w = self._window
        rows = w.rows_of(names, self.bars)
        w.advance()
        for f in self.fields:
            w.put(f, rows, bars[f].cast(pl.Float64).fill_null(np.nan).to_numpy())
        self.bars += 1
        self.last_time = time
        values = self._evaluate(rows)
        out = pl.DataFrame({BY_INSTRUMENT: names}).with_columns(pl.lit(time).alias(BY_DATE))
        return out.with_columns(values[name].alias(name) for name in self.names)

    def _names_series(self) -> pl.Series:
        names = self._window.names
        if self._names is None or len(self._names) != len(names):
            self._names = pl.Series(BY_INSTRUMENT, names)
        return self._names

    def _grown_states(self) -> dict[Expr, np.ndarray]:
        """Each resuming node's state, with a row of NaN (no history yet) for every
        instrument seen since the last bar."""
        count = len(self._window.names)
        for node in self._resuming:
            width = STATE_WIDTH[_STATE[node.op]]
            held = self._states.get(node, np.empty((0, width)))
            if held.shape[0] < count:
                fresh = np.full((count - held.shape[0], width), np.nan)
                self._states[node] = np.concatenate([held, fresh])
        return self._states

    def _evaluate(self, rows: np.ndarray) -> dict[str, pl.Series]:
        """Each node over only the newest columns its users need (``needs``), through the
        plan's own operator builders and kernels, each on a grid as wide as it reads."""
        w = self._window
        newest = self.bars - 1  # the newest column's bar number
        computed: dict[Expr, np.ndarray] = {}
        values: dict[str, pl.Series] = {}
        plan, need = self.plan, self._need

        grids: dict[int, _Chunk] = {}  # by width: nodes of one width share masks and spans
        states = self._grown_states()

        def grid(width: int) -> _Chunk:
            if width in grids:
                return grids[width]
            first = newest - width + 1  # bar number of the grid's first column
            start = np.clip(w.first - first, 0, width).astype(np.int64)
            g = Grid(
                instruments=self._names_series(),
                calendar=pl.Series(BY_DATE, np.arange(width)),
                start=start,
                end=np.full(len(w.names), width, dtype=np.int64),
                present=np.zeros((0, 0), dtype=bool),
                rows=None,
                phase=first,
            )
            grids[width] = _Chunk(g, 0, len(w.names), {}, states=states, newest=self._newest)
            return grids[width]

        def value(node: Expr, width: int) -> Value:
            if node.op == "#":
                return node.value
            if node.op == "'":
                return np.nan
            panel = w.panel(node.name) if node.op == "$" else computed[node]
            have = panel.shape[1]
            if have >= width:  # a view: no builder writes into its arguments
                return panel[:, have - width :]
            pad = np.full((panel.shape[0], width - have), np.nan)  # an extra: shape only
            return np.concatenate([pad, panel], axis=1)

        with np.errstate(all="ignore"):
            for node in plan.nodes:
                if node not in need or node in computed:
                    continue
                if node in plan.fused:
                    group = [n for n in plan.fused[node] if n in need]
                    width = max(need[n] for n in group) + _reach(node)
                    chunk = grid(width)
                    x = chunk.full(value(node.args[0], width))
                    for n, fused in _quantiles(group, x, chunk).items():
                        computed[n] = fused[:, width - need[n] :]
                    continue
                width = need[node] + (_window(node) if node in self._resuming else _reach(node))
                chunk = grid(width)
                args = [value(a, width) for a in plan.inputs(node)]
                result = chunk.full(_BUILD[node.op](args, node, chunk))
                computed[node] = result[:, width - need[node] :]
        for e, names in self._by_expr.items():
            panel = w.panel(e.name) if e.op == "$" else computed.get(e)
            if panel is None:  # a number as a feature
                column = np.full(len(rows), e.value if e.op == "#" else np.nan)
            else:
                column = np.ascontiguousarray(panel[rows, -1])
            series = as_series(column)
            for name in names:
                values[name] = series.alias(name)
        return values
