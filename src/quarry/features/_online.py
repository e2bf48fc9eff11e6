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
from quarry.features._compile import LEAVES, Plan, _window, as_series, evaluate
from quarry.features._expr import Expr
from quarry.features._grid import BY_DATE, BY_INSTRUMENT, Grid
from quarry.features._registry import OPERATORS

__all__ = ["OnlineFeatures", "lookback"]

# Operators whose value depends on every earlier row: no bounded window reproduces them.
_UNBOUNDED = ("EMA",)
# Operators whose kernels keep running sums, rebuilt from the window at every N-th row: a
# value reads its last 2N - 1 rows (``_kernels``' note), not N.
_RUNNING = ("Count", "Sum", "Mean", "Var", "Std", "Cov", "Corr", "Slope", "Rsquare", "Resi")


def lookback(plan: Plan) -> int:
    """How many rows before the newest one the plan's outputs read (0: the row alone).

    A window of N rows over x reads N - 1 rows more than x does (2N - 2 for the kernels with
    running sums, which rebuild them every N rows); ``Ref(x, N)`` reads N more.
    Raises ExpressionError, naming the node, for an operator with no bounded lookback.
    """
    memo: dict[Expr, int] = {}

    def back(node: Expr) -> int:
        if node.op in LEAVES:
            return 0
        if node in memo:
            return memo[node]
        inner = max((back(a) for a in node.args), default=0)
        kind = OPERATORS[node.op].kind
        if node.op in _UNBOUNDED:
            raise ExpressionError(
                f"{node} depends on every earlier bar, so a stream cannot update it from a "
                "bounded window; use a windowed operator such as Mean or WMA instead"
            )
        if kind in ("rolling", "pair"):
            n = _window(node, 1 if node.op == "Quantile" else -1)
            if n == 0:
                raise ExpressionError(
                    f"{node} is an expanding window (N = 0) over all history, which a "
                    "stream cannot update from a bounded window; give a window of N rows"
                )
            if node.op == "Delta":
                inner += n
            else:
                inner += 2 * (n - 1) if node.op in _RUNNING else n - 1
        elif kind == "ref":
            inner += max(_window(node), 0)
        # Corr's and Rsquare's flat-window stds read the same window as the node itself.
        inner = max([inner, *(back(x) for x in plan.extras.get(node, ()))])
        memo[node] = inner
        return inner

    return max((back(e) for e in plan.outputs.values()), default=0)


@dataclass
class _Window:
    """The last ``depth`` bars of every instrument seen: one (instruments, depth) panel per
    field, the newest bar in the last column."""

    depth: int
    fields: tuple[str, ...]
    names: list[str]
    index: dict[str, int]
    first: np.ndarray  # each instrument's first bar, as a count of bars since the stream began
    panels: dict[str, np.ndarray]

    @classmethod
    def empty(cls, depth: int, fields: Sequence[str]) -> _Window:
        return cls(
            depth,
            tuple(fields),
            [],
            {},
            np.zeros(0, dtype=np.int64),
            {f: np.empty((0, depth)) for f in fields},
        )

    def rows_of(self, instruments: Sequence[str], bar: int) -> np.ndarray:
        """Each instrument's row, adding rows (history starting at ``bar``) for new ones."""
        new = [s for s in dict.fromkeys(instruments) if s not in self.index]
        if new:
            for s in new:
                self.index[s] = len(self.names)
                self.names.append(s)
            self.first = np.concatenate([self.first, np.full(len(new), bar, dtype=np.int64)])
            blank = np.full((len(new), self.depth), np.nan)
            self.panels = {f: np.concatenate([p, blank]) for f, p in self.panels.items()}
        return np.fromiter((self.index[s] for s in instruments), np.int64, len(instruments))

    def advance(self) -> None:
        """Drop the oldest column and open an empty (NaN) one for the new bar."""
        for p in self.panels.values():
            p[:, :-1] = p[:, 1:]
            p[:, -1] = np.nan


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
            w.panels[f][rows, -1] = bars[f].cast(pl.Float64).fill_null(np.nan).to_numpy()
        self.bars += 1
        self.last_time = time
        values = self._evaluate(rows)
        out = pl.DataFrame({BY_INSTRUMENT: names}).with_columns(pl.lit(time).alias(BY_DATE))
        return out.with_columns(values[name].alias(name) for name in self.names)

    def _evaluate(self, rows: np.ndarray) -> dict[str, pl.Series]:
        w = self._window
        n = len(w.names)
        # The window's first column is bar number self.bars - depth; a history that began
        # before it starts at column 0, one that began inside it at its own column.
        start = np.clip(w.first - (self.bars - w.depth), 0, w.depth).astype(np.int64)
        end = np.full(n, w.depth, dtype=np.int64)
        grid = Grid(
            instruments=pl.Series(BY_INSTRUMENT, w.names),
            calendar=pl.Series(BY_DATE, np.arange(w.depth)),
            start=start,
            end=end,
            present=np.zeros((0, 0), dtype=bool),
            rows=None,
            fields=dict(w.panels),
            phase=self.bars - w.depth,
        )
        values: dict[str, pl.Series] = {}

        def sink(node: Expr, panel: np.ndarray) -> None:
            series = as_series(np.ascontiguousarray(panel[rows, -1]))
            for name in self._by_expr[node]:
                values[name] = series.alias(name)

        evaluate(self.plan, grid, sink=sink)
        return values
