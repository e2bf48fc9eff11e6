"""Dense panels: a long frame of bars laid out as instruments x market days.

Qlib computes each instrument's features over its own rows of the market calendar, from its
first to its last listed day, with NaN on days it did not trade (a suspension is a NaN row,
not a skipped one, so ``Ref($close, 1)`` after it is NaN). A panel gives the same windows
to every operator for free: the calendar is the union of the frame's dates, each instrument
is one contiguous row of the array, and ``start``/``end`` mark its history.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from quarry.exceptions import DataError, ExpressionError

__all__ = ["Grid"]

BY_INSTRUMENT = "instrument"
BY_DATE = "date"


@dataclass
class Grid:
    """Fields of a long frame as (instruments, days) float64 arrays, NaN where missing.

    ``present`` marks the cells that had a row in the frame, the cells results are
    reported for; ``rows`` maps the frame's rows to cells, in the frame's order (dropped
    with ``keep_rows=False`` once the fields are laid out, to save memory at scale).
    """

    instruments: pl.Series
    calendar: pl.Series
    start: np.ndarray
    end: np.ndarray
    present: np.ndarray
    rows: tuple[np.ndarray, np.ndarray] | None
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    groups: dict[str, int] = field(default_factory=dict)  # group field -> number of groups
    # The calendar index of column 0, from which the window kernels count their anchor rows
    # (``_kernels``): 0 for a whole calendar; a live window passes its first bar's number.
    phase: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.instruments), len(self.calendar)

    @classmethod
    def from_frame(
        cls,
        frame: pl.DataFrame,
        fields: Iterable[str],
        *,
        groups: Iterable[str] = (),
        keep_rows: bool = True,
    ) -> Grid:
        """Lay out ``fields`` (as floats) and ``groups`` (as integer codes, -1 missing) of a
        long frame with columns instrument and date."""
        for key in (BY_INSTRUMENT, BY_DATE):
            if key not in frame.columns:
                raise DataError(f"the bars have no {key!r} column; give instrument and date")
        instruments = frame[BY_INSTRUMENT].unique().sort()
        codes = frame[BY_INSTRUMENT].cast(pl.Enum(instruments.cast(pl.String))).to_physical()
        inst = codes.to_numpy().astype(np.int64)
        days = frame[BY_DATE].to_physical()
        calendar_days = np.unique(days.to_numpy())
        when = np.searchsorted(calendar_days, days.to_numpy()).astype(np.int64)
        n, t = len(instruments), len(calendar_days)
        present = np.zeros((n, t), dtype=bool)
        present[inst, when] = True
        if int(present.sum()) != frame.height:
            dup = frame.filter(pl.struct(BY_INSTRUMENT, BY_DATE).is_duplicated()).row(0)
            raise DataError(
                f"the bars repeat instrument {dup[0]!r} on {dup[1]}: give one row per "
                "instrument and date"
            )
        start = np.full(n, t, dtype=np.int64)
        end = np.zeros(n, dtype=np.int64)
        np.minimum.at(start, inst, when)
        np.maximum.at(end, inst, when + 1)
        calendar = pl.Series(BY_DATE, calendar_days).cast(frame[BY_DATE].dtype)
        grid = cls(instruments, calendar, start, end, present, (inst, when))
        for name in fields:
            grid.fields[name] = grid._lay_out(frame, name)
        for name in groups:
            grid.fields[name], grid.groups[name] = grid._lay_out_groups(frame, name)
        if not keep_rows:
            grid.rows = None
        return grid

    def cells(self) -> tuple[np.ndarray, np.ndarray]:
        if self.rows is None:
            raise RuntimeError("this grid dropped its row map (keep_rows=False)")
        return self.rows

    def cells_of(self, frame: pl.DataFrame) -> np.ndarray:
        """A mask of the cells that ``frame`` (instrument, date) has a row for; rows of
        instruments or dates outside the grid are ignored."""
        names = self.instruments.cast(pl.String)
        keys = frame.select(
            pl.col(BY_INSTRUMENT)
            .cast(pl.String)
            .replace_strict(names, np.arange(len(names)), default=None, return_dtype=pl.Int64)
            .alias("i"),
            pl.col(BY_DATE).to_physical().alias("d"),
        ).drop_nulls()
        days = keys["d"].to_numpy()
        calendar = self.calendar.to_physical().to_numpy()
        t = np.searchsorted(calendar, days)
        ok = (t < calendar.size) & (calendar[np.minimum(t, calendar.size - 1)] == days)
        mask = np.zeros(self.shape, dtype=bool)
        mask[keys["i"].to_numpy()[ok], t[ok]] = True
        return mask

    @property
    def nbytes(self) -> int:
        """Memory held by the laid-out fields and masks."""
        return sum(a.nbytes for a in self.fields.values()) + self.present.nbytes

    def _lay_out(self, frame: pl.DataFrame, name: str) -> np.ndarray:
        column = frame[name]
        if not (column.dtype.is_numeric() or column.dtype == pl.Boolean):
            raise ExpressionError(
                f"${name} holds {column.dtype} values, not numbers; only a group field such "
                "as CSNeutralize's second argument may hold text"
            )
        values = column.cast(pl.Float64).fill_null(np.nan).to_numpy()
        out = np.full(self.shape, np.nan)
        out[self.cells()] = values
        return out

    def _lay_out_groups(self, frame: pl.DataFrame, name: str) -> tuple[np.ndarray, int]:
        column = frame[name]
        labels = column.drop_nulls().unique().sort()
        codes = column.cast(pl.String).cast(pl.Enum(labels.cast(pl.String))).to_physical()
        out = np.full(self.shape, -1, dtype=np.int64)
        out[self.cells()] = codes.fill_null(-1).to_numpy()
        return out, len(labels)

    def in_history(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        """True on the cells of instruments lo..hi that lie within their histories."""
        hi = self.shape[0] if hi is None else hi
        days = np.arange(self.shape[1])
        mask: np.ndarray = (days >= self.start[lo:hi, None]) & (days < self.end[lo:hi, None])
        return mask
