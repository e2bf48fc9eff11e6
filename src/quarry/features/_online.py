"""Features of the newest bar, updated one bar at a time, from research's own plan and kernels.

A live stream cannot recompute every instrument's whole history on each bar, and must not
compute its features with a second, hand-written copy of each operator (the skew between
research and production that the live teams warn about). Every operator of the language
except an expanding window (``Mean(x, 0)``) and ``EMA`` reads a bounded number of past rows,
so ``OnlineFeatures`` evaluates the very same ``Plan`` with the very same operator builders
and kernels, one bar at a time:

- each node computes its newest column alone, on a grid as wide as it reads of its inputs
  (``_widths``): an element-wise node one column, ``Ref(x, N)`` N + 1, a window N;
- the running windows (sums, moments, co-moments, regressions) resume from a state kept per
  instrument (``_kernels``' note), reading the value leaving their window and the new one;
  the other windows (Max, Rank, Quantile...) compute their newest column by one scan;
- each node's columns go into a ring as deep as its users read (``_Ring``), so that no value
  is computed twice: at 16,000 instruments, recomputing the inputs of the 60-bar windows over
  their windows on every bar took three times as long as the rest of the update.

A bar thus costs each node one column, whatever the stream's age. A restart replays the last
``depth`` bars (``lookback``, which counts 2N - 2 rows for a running window): a state
rebuilt from nothing is exact from the first anchor in that replay on, and the replay holds
one, with the window before it, for every node of a chain.

Columns are laid out as research lays out its panels (``_grid``): one per bar time seen, NaN
for an instrument that had no bar at a time within its history (a suspension; its nodes
still get values, as research's do), each instrument's history starting at its first bar.
An instrument absent from a bar gets no value for that bar, as in research, where only cells
with a bar are reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from quarry.exceptions import DataError, ExpressionError, UsageError
from quarry.features._compile import (
    _BUILD,
    LEAVES,
    Build,
    Plan,
    _Chunk,
    _quantiles,
    _window,
    as_series,
    state_width,
)
from quarry.features._expr import Expr
from quarry.features._grid import BY_DATE, BY_INSTRUMENT, Grid
from quarry.features._kernels import newest_extremes
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


# The kernel of each operator whose kernel resumes from a state kept per instrument.
_STATE = {
    **dict.fromkeys(("Count", "Sum", "Mean"), "sum"),
    **dict.fromkeys(("Var", "Std"), "var"),
    **dict.fromkeys(("Cov", "Corr"), "corr_cov"),
    **dict.fromkeys(("Slope", "Rsquare", "Resi"), "regression"),
    **dict.fromkeys(("Quantile", "Med"), "quantile"),  # a sorted window, per fused group
}


# Operators whose builders can compute the newest column alone: window kernels, from the
# newest window, and shifts, which read one column. (Quantile and Med resume from a kept
# sorted window instead: ``_STATE``; Max, Min, IdxMax and IdxMin are scanned a series at a
# time: ``_EXTREMES``.)
_NEWEST = ("Rank", "Ref", "Delta")


def needs(plan: Plan) -> dict[Expr, int]:
    """How many of the newest columns of each node (fields included) the outputs' newest
    column depends on, when every node is computed afresh from the bars: 1 for an output;
    an argument's need is its user's plus the user's reach. The extras (Corr's flat-window
    stds) are needed where their node's outputs are."""
    need: dict[Expr, int] = {e: 1 for e in plan.outputs.values()}
    for node in reversed(plan.nodes):
        mine = need.get(node, 0)
        if not mine:
            continue
        reach = mine + _reach(node)
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


def _capacity(count: int, have: int) -> int:
    """Room for ``count`` instruments, with a quarter more for listings to come: growing
    copies every ring (half a second at 16,000 instruments), so it happens seldom, and the
    room grows by at least a quarter each time."""
    return have if count <= have else max(count + count // 4, 64)


class _Ring:
    """The last ``depth`` columns of one panel (a field's bars or a node's values), for up
    to ``capacity`` instruments, the newest column last.

    Time-major, so that a bar's column (every instrument at one time) is one contiguous row
    of memory, written at once and read at once by the element-wise operators; and twice as
    deep as the window, each column written at two places ``depth`` apart, so that the window
    is always one slice: a new bar costs one column, not a shift of the whole window."""

    __slots__ = ("data", "depth")

    def __init__(self, depth: int, capacity: int) -> None:
        self.depth = depth
        self.data = np.full((2 * depth, capacity), np.nan)

    def grow(self, capacity: int) -> None:
        have = self.data.shape[1]
        if capacity > have:
            grown = np.full((2 * self.depth, capacity), np.nan)
            grown[:, :have] = self.data
            self.data = grown

    def put(self, bar: int, count: int, values: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Bar number ``bar``'s column of the first ``count`` instruments: ``values``, or
        (``rows``) ``values`` at those rows and NaN (missing at that bar) at the others.
        The room past ``count`` stays NaN for the instruments to come."""
        at = bar % self.depth
        row = self.data[at + self.depth, :count]  # the copy the newest window reads
        if rows is None:
            row[:] = values
        else:
            row[:] = np.nan
            row[rows] = values
        if self.depth > 1:  # the other, read once the window wraps (never at depth 1)
            self.data[at, :count] = row

    def panel(self, bar: int, width: int, count: int) -> np.ndarray:
        """The last ``width`` columns up to bar ``bar`` of the first ``count`` instruments:
        (instruments, width), the newest last (a view)."""
        assert width <= self.depth
        end = bar % self.depth + self.depth + 1
        return self.data[end - width : end, :count].T


@dataclass
class _Instruments:
    """The instruments seen, in the order they were first seen, and their first bars."""

    names: list[str]
    first: np.ndarray  # each instrument's first bar, as a count of bars since the stream began
    added: list[str] = field(default_factory=list)  # those first seen in the last bar
    # each name's row, looked up by a join in Arrow: no Python string per instrument a bar
    _rows: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema={BY_INSTRUMENT: pl.String, "row": pl.Int64})
    )
    # The last bar's instruments and their rows: a feed's snapshots mostly list the same
    # instruments in the same order, and one comparison of the columns is then all it costs.
    _last: tuple[pl.Series, np.ndarray] | None = None

    def rows_of(self, instruments: pl.Series, bar: int) -> np.ndarray:
        """Each instrument's row, adding rows (history starting at ``bar``) for new ones;
        DataError for an instrument listed twice."""
        self.added = []
        if self._last is not None and self._last[0].equals(instruments):
            return self._last[1]
        if instruments.null_count():
            raise DataError("lists an instrument without a name (null): name every one")
        if instruments.n_unique() < len(instruments):
            dup = instruments.filter(instruments.is_duplicated())[0]
            raise DataError(f"repeats instrument {dup!r}: give it once")
        found = self._find(instruments)
        if found.null_count():
            new = instruments.filter(found.is_null())
            self.added = new.to_list()
            rows = np.arange(len(self.names), len(self.names) + len(new))
            self._rows = pl.concat([self._rows, pl.DataFrame({BY_INSTRUMENT: new, "row": rows})])
            self.names.extend(self.added)
            more = np.full(len(new), bar, dtype=np.int64)
            self.first = np.concatenate([self.first, more])
            found = self._find(instruments)
        rows = found.to_numpy()
        self._last = (instruments, rows)
        return rows

    def _find(self, instruments: pl.Series) -> pl.Series:
        """Each instrument's row, null for one not seen yet."""
        bar = instruments.alias(BY_INSTRUMENT).to_frame()
        return bar.join(self._rows, on=BY_INSTRUMENT, how="left", maintain_order="left")["row"]


@dataclass(frozen=True)
class _Step:
    """One node of a bar's evaluation, or a fused group: Quantile and Med nodes of one
    series and window (``group``), or Max/IdxMax (Min/IdxMin) nodes of one series
    (``extremes``: largest or not, and the windows, ascending)."""

    node: Expr
    width: int  # how many of its inputs' newest columns it reads
    build: Build
    ring: _Ring
    inputs: tuple[_Ring | float, ...]
    group: tuple[Expr, ...] = ()
    extremes: tuple[bool, np.ndarray] | None = None


# Max and IdxMax (Min and IdxMin) nodes of one series share one scan (``newest_extremes``).
_EXTREMES = {"Max": True, "IdxMax": True, "Min": False, "IdxMin": False}


def _widths(plan: Plan) -> tuple[dict[Expr, int], dict[Expr, int]]:
    """The nodes the outputs depend on, each with how many of its inputs' newest columns it
    reads to compute its own newest value (1 for an element-wise node, N + 1 for a running
    window that resumes, N for another window, N + 1 for ``Ref(x, N)``), and how many of
    each node's newest columns its users read: the depth of the ring that keeps them (at
    least 1, the newest, for an output)."""
    depth: dict[Expr, int] = {e: 1 for e in plan.outputs.values()}
    width: dict[Expr, int] = {}
    for node in reversed(plan.nodes):
        if node not in depth or node.op in LEAVES:
            continue
        n = _window(node, 1 if node.op == "Quantile" else -1) if node.op in _STATE else 0
        width[node] = 1 + (n if n > 0 else _reach(node))  # a resuming kernel reads N + 1
        for a in plan.inputs(node):
            if a.op not in ("#", "'"):
                depth[a] = max(depth.get(a, 0), width[node])
    return {n: width[n] for n in plan.nodes if n in width}, depth  # arguments first


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
        self._fields_set = set(self.fields)
        self._seen = _Instruments([], np.zeros(0, dtype=np.int64))
        self.bars = 0  # bar times seen
        self.last_time: object | None = None
        self._outputs = [self.plan.outputs[name] for name in self.names]
        self._width, depth = _widths(self.plan)
        self._capacity = 0
        self._rings = {node: _Ring(d, 0) for node, d in depth.items()}
        # the running state of each running window, a row per instrument (``_kernels``)
        self._states = {
            n: np.full((0, state_width(n, _STATE[n.op])), np.nan)
            for n in self._width
            if n.op in _STATE and n == self._state_key(n)
        }
        # the window nodes whose kernels compute their newest column alone (``_kernels``)
        self._newest = frozenset(n for n in self._width if n.op in _NEWEST)
        self._names: pl.Series | None = None  # the instruments as a series (Mask reads it)
        self._steps = self._plan_steps()

    def _plan_steps(self) -> list[_Step]:
        """The nodes to compute a bar, in order, each with its builder, its ring and its
        inputs (a ring, or a number): looked up once, not on every bar for every node."""

        def source(a: Expr) -> _Ring | float:
            if a.op in ("#", "'"):
                return a.value if a.op == "#" else np.nan
            return self._rings[a]

        extremes: dict[tuple[Expr, bool], list[Expr]] = {}
        for node in self._width:
            if node.op in _EXTREMES:
                extremes.setdefault((node.args[0], _EXTREMES[node.op]), []).append(node)
        steps: list[_Step] = []
        grouped: set[Expr] = set()
        for node, width in self._width.items():
            if node in grouped:
                continue
            group: tuple[Expr, ...] = ()
            fused: tuple[bool, np.ndarray] | None = None
            inputs = self.plan.inputs(node)
            if node in self.plan.fused:
                group = tuple(n for n in self.plan.fused[node] if n in self._width)
                grouped.update(group)
                inputs = node.args[:1]
            elif node.op in _EXTREMES:
                largest = _EXTREMES[node.op]
                group = tuple(sorted(extremes[node.args[0], largest], key=_window))
                grouped.update(group)
                windows = sorted({_window(n) for n in group})
                fused = (largest, np.array(windows, dtype=np.int64))
                inputs = node.args[:1]
                width = windows[-1]
            build = _BUILD[node.op]
            sources = tuple(source(a) for a in inputs)
            steps.append(_Step(node, width, build, self._rings[node], sources, group, fused))
        return steps

    def _state_key(self, node: Expr) -> Expr:
        """The node under which a resuming node's state is kept: Quantile and Med nodes of
        one series and window share one sorted window, under the first of them computed."""
        if node in self.plan.fused:
            return next(n for n in self.plan.fused[node] if n in self._width)
        return node

    @property
    def instruments(self) -> list[str]:
        return list(self._seen.names)

    @property
    def first_bars(self) -> dict[str, int]:
        """Each instrument's first bar, numbered from the stream's first (0)."""
        return dict(zip(self._seen.names, self._seen.first.tolist(), strict=True))

    def resume(self, bars: int, first: Mapping[str, int]) -> None:
        """Continue a stream that had seen ``bars`` bar times, whose instruments began at
        the bars ``first`` gives: the next ``update`` is bar number ``bars``. Replaying the
        last ``depth`` bars after this rebuilds the state exactly, anchors included."""
        if self.bars:
            raise RuntimeError("resume() is for a fresh OnlineFeatures")
        names = sorted(first, key=lambda s: (first[s], s))
        self._seen.rows_of(pl.Series(BY_INSTRUMENT, names, dtype=pl.String), 0)
        self._seen.first = np.fromiter((first[s] for s in names), np.int64, len(names))
        self._grow()
        self.bars = bars

    def update(self, time: object, bars: pl.DataFrame) -> pl.DataFrame:
        """The features at ``time`` of the instruments in ``bars``, in their order: columns
        instrument, date and the features (null for missing).

        Bar times must increase; an instrument may appear once per bar.
        """
        return self.frame(time, *self.update_matrix(time, bars))

    def frame(self, time: object, instruments: pl.Series, matrix: np.ndarray) -> pl.DataFrame:
        """``update_matrix``'s output as ``update`` gives it: instrument, date, features."""
        out = instruments.to_frame().with_columns(pl.lit(time).alias(BY_DATE))
        # columns over the matrix's own memory where each is contiguous (an F-ordered matrix)
        return out.with_columns(
            as_series(np.ascontiguousarray(matrix[:, j]), name) for j, name in enumerate(self.names)
        )

    def update_matrix(self, time: object, bars: pl.DataFrame) -> tuple[pl.Series, np.ndarray]:
        """``update`` without the frame: the instruments of ``bars`` in their order (a
        String series), and their features as a matrix (a row per instrument, a column per
        name of ``names``, NaN for missing), as a model scores them
        (``PackagedModel.matrix_scorer``)."""
        if self.last_time is not None and not time > self.last_time:  # type: ignore[operator]
            raise DataError(
                f"bar time {time} does not come after the last one ({self.last_time}); "
                "bars must arrive in time order"
            )
        if not self._fields_set <= set(bars.columns):
            self.plan.check_fields(bars.columns)  # names the missing one
        names = bars[BY_INSTRUMENT].cast(pl.String).alias(BY_INSTRUMENT)
        try:
            rows = self._seen.rows_of(names, self.bars)
        except DataError as e:
            raise DataError(f"the bar at {time} {e}") from None
        self._grow()
        for f in self.fields:
            series = bars[f]  # a float column's nulls come out of numpy as NaN
            column = (series if series.dtype == pl.Float64 else series.cast(pl.Float64)).to_numpy()
            self._rings[Expr("$", name=f)].put(self.bars, len(self._seen.names), column, rows)
        self.bars += 1
        self.last_time = time
        self._evaluate()
        return names, self._newest_rows(rows)

    @property
    def added(self) -> list[str]:
        """The instruments first seen in the last bar, in their order in it."""
        return self._seen.added

    def reserve(self, count: int) -> None:
        """Room for ``count`` instruments made now (the memory allocated and written), not
        when the bars bring them."""
        self._grow(count)

    def _grow(self, count: int | None = None) -> None:
        """Room in every ring and state for the instruments seen (or ``count``); a new
        instrument's state is a row of NaN (no history yet), its past columns NaN (before
        its history)."""
        count = max(len(self._seen.names), count or 0)
        capacity = _capacity(count, self._capacity)
        if capacity == self._capacity:
            return
        for ring in self._rings.values():
            ring.grow(capacity)
        for node, held in self._states.items():
            grown = np.full((capacity, held.shape[1]), np.nan)
            grown[: held.shape[0]] = held
            self._states[node] = grown
        self._capacity = capacity

    def _names_series(self) -> pl.Series:
        names = self._seen.names
        if self._names is None or len(self._names) != len(names):
            self._names = pl.Series(BY_INSTRUMENT, names)
        return self._names

    def _evaluate(self) -> None:
        """Each node's newest column, through the plan's own operator builders and kernels,
        on a grid as wide as the node reads of its inputs' rings; the column then goes into
        the node's own ring, which its users read."""
        seen, rings = self._seen, self._rings
        count = len(seen.names)
        newest = self.bars - 1  # the newest column's bar number
        grids: dict[int, _Chunk] = {}  # by width: nodes of one width share masks and spans
        states = {node: held[:count] for node, held in self._states.items()}

        def grid(width: int) -> _Chunk:
            if width in grids:
                return grids[width]
            first = newest - width + 1  # bar number of the grid's first column
            start = np.clip(seen.first - first, 0, width).astype(np.int64)
            g = Grid(
                instruments=self._names_series(),
                calendar=pl.Series(BY_DATE, np.arange(width)),
                start=start,
                end=np.full(count, width, dtype=np.int64),
                present=np.zeros((0, 0), dtype=bool),
                rows=None,
                phase=first,
            )
            grids[width] = _Chunk(g, 0, count, {}, states=states, newest=self._newest, order="F")
            return grids[width]

        with np.errstate(all="ignore"):
            for step in self._steps:
                width = step.width
                chunk = grids[width] if width in grids else grid(width)
                args = [
                    a.panel(newest, width, count) if isinstance(a, _Ring) else a
                    for a in step.inputs
                ]
                if step.extremes is not None:  # Max and IdxMax of one series, one scan
                    self._extremes(step, chunk.full(args[0]), chunk, newest, count)
                    continue
                if step.group:  # Quantile and Med of one series and window, in one pass
                    fused = _quantiles(list(step.group), chunk.full(args[0]), chunk)
                    for n, panel in fused.items():
                        rings[n].put(newest, count, panel[:, -1])
                    continue
                result = chunk.full(step.build(args, step.node, chunk))
                step.ring.put(newest, count, result[:, -1])

    def _extremes(self, step: _Step, x: np.ndarray, chunk: _Chunk, newest: int, count: int) -> None:
        """A fused group of Max/IdxMax (Min/IdxMin) nodes: each node's newest column into
        its ring, from one scan of the series' largest window."""
        assert step.extremes is not None
        largest, windows = step.extremes
        # (windows, instruments) in memory: each window's column is contiguous for its ring
        values = np.empty((len(windows), count)).T
        positions = np.empty((len(windows), count)).T
        newest_extremes(x, windows, chunk.start, chunk.end, largest, values, positions)
        at = {int(w): k for k, w in enumerate(windows)}
        for node in step.group:
            k = at[_window(node)]
            out = positions if node.op.startswith("Idx") else values
            self._rings[node].put(newest, count, out[:, k])

    def _newest_rows(self, rows: np.ndarray) -> np.ndarray:
        """The outputs' newest column at ``rows``: (rows, outputs), F-ordered (each output's
        column gathered into contiguous memory at once)."""
        count, newest = len(self._seen.names), self.bars - 1
        out = np.empty((len(self._outputs), len(rows)))
        # a feed's snapshots mostly list every instrument in the order first seen: a slice
        whole = len(rows) == count and np.array_equal(rows, np.arange(count))
        for j, e in enumerate(self._outputs):
            if e.op in ("#", "'"):  # a number as a feature
                out[j] = e.value if e.op == "#" else np.nan
                continue
            column = self._rings[e].panel(newest, 1, count)[:, 0]
            if whole:
                out[j] = column
            else:
                np.take(column, rows, out=out[j], mode="clip")  # rows are in range: no checks
        return out.T
