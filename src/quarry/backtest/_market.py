"""The market a backtest trades in, as dense panels from the store, and a signal on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import polars as pl
from numba import njit

from quarry._memory import small_pages
from quarry.backtest._engine import Market
from quarry.data import Store, read_bars
from quarry.exceptions import UsageError

__all__ = ["DEAL_PRICES", "Aligned", "align", "index_returns", "industry_codes"]

DEAL_PRICES = ("open", "close", "vwap")


@dataclass(frozen=True)
class Aligned:
    """A signal and the market on one grid of days x instruments."""

    dates: list[object]
    instruments: list[str]
    scores: np.ndarray
    market: Market


def align(
    store: Store,
    signal: pl.DataFrame,
    *,
    deal_price: str = "close",
    universe: str | None = None,
    as_of: datetime | str | None = None,
) -> Aligned:
    """Adjusted bars from the first signal date on, and the signal on their grid; a score
    outside ``universe`` (on a day the instrument was not a member) is dropped.

    Runs with numpy's huge-page advice off: the panels are new arrays of hundreds of MB, and
    faulting them in as huge pages took 12.5 s of this at 16,000 x 2,520 against 8 s."""
    with small_pages():
        return _align(store, signal, deal_price=deal_price, universe=universe, as_of=as_of)


def _align(
    store: Store,
    signal: pl.DataFrame,
    *,
    deal_price: str,
    universe: str | None,
    as_of: datetime | str | None,
) -> Aligned:
    if deal_price not in DEAL_PRICES:
        raise UsageError(f"--deal-price {deal_price!r}: choose one of {', '.join(DEAL_PRICES)}")
    missing = [c for c in ("instrument", "date", "score") if c not in signal.columns]
    if missing:
        raise UsageError(
            f"the signal has no {', '.join(missing)} column(s); it needs instrument, date, score"
        )
    first = signal["date"].cast(pl.Date).min()
    if not isinstance(first, date):
        raise UsageError("the signal has no dated row")
    fields = list(dict.fromkeys([deal_price, "close", "volume"]))
    bars = read_bars(store, fields, start=first, as_of=as_of, adjust="adjusted")
    if bars.height == 0:
        raise UsageError(f"{store.location}: no bars from {first} on to backtest with")
    dates = bars["date"].unique().sort()
    instruments = bars["instrument"].unique().sort()
    shape = (dates.len(), instruments.len())

    names = instruments.cast(pl.String)
    enum = pl.Enum(names)
    calendar = dates.cast(pl.Date).to_physical().to_numpy().astype(np.int64)
    # Day numbers to grid rows by one lookup table over the calendar's span (a binary
    # search per row took seconds at 16,000 instruments); -1 off the calendar.
    row_of = np.full(int(calendar[-1] - calendar[0]) + 1, -1, dtype=np.int64)
    row_of[calendar - calendar[0]] = np.arange(calendar.size)

    def positions(frame: pl.DataFrame) -> tuple[np.ndarray, bool]:
        """Flat grid positions (row x instruments + column) of a long frame's rows, -1 off
        the grid, and whether the rows come instrument by instrument, each by date (as
        ``read_bars`` gives them). Instruments map by an enum cast (comparing 40M names one
        by one took a minute at 16,000 instruments), days by a lookup table, in one compiled
        pass: numpy's temporaries of 40M rows cost more in page faults than the arithmetic."""
        codes = frame["instrument"].cast(pl.String).cast(enum, strict=False).to_physical()
        days = frame["date"].cast(pl.Date).to_physical()
        if days.null_count():
            days = days.fill_null(-(2**31))
        # an unknown instrument is null: past the last column, so off the grid
        return _flat_positions(
            days.to_numpy(), codes.fill_null(shape[1]).to_numpy(), row_of, int(calendar[0]),
            shape[0], shape[1],
        )  # fmt: skip

    def lay(frame: pl.DataFrame, column: str, at: tuple[np.ndarray, bool]) -> np.ndarray:
        flat, by_instrument = at
        values = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
        out = np.empty(shape)
        _scatter(out.reshape(-1), flat, values, shape[1], shape[0], by_instrument)
        return out

    scores = lay(signal, "score", positions(signal))
    if universe is not None:
        members = read_bars(store, ["close"], start=first, as_of=as_of, universe=universe)
        member = np.isfinite(lay(members, "close", positions(members)))
        scores = np.where(member, scores, np.nan)
    at = positions(bars)
    close = lay(bars, "close", at)
    market = Market(
        deal=close if deal_price == "close" else lay(bars, deal_price, at),
        close=close,
        volume=lay(bars, "volume", at),
    )
    return Aligned(dates.to_list(), instruments.to_list(), scores, market)


@njit(cache=True)
def _flat_positions(
    days: np.ndarray,
    codes: np.ndarray,
    row_of: np.ndarray,
    first_day: int,
    height: int,
    width: int,
) -> tuple[np.ndarray, bool]:
    """Each row's flat position in a height x width grid (-1 off it), and whether the rows
    are sorted by column, then row."""
    out = np.empty(days.size, dtype=np.int64)
    ordered = True
    previous = -1
    for k in range(days.size):
        d = days[k] - first_day
        row = row_of[d] if 0 <= d < row_of.size else -1
        if row >= 0 and codes[k] < width:
            out[k] = row * width + codes[k]
            key = codes[k] * height + row
            ordered &= key >= previous
            previous = key
        else:
            out[k] = -1
    return out, ordered


@njit(cache=True)
def _scatter(
    out: np.ndarray, flat: np.ndarray, values: np.ndarray, width: int, height: int, ordered: bool
) -> None:
    """``out[flat] = values`` where ``flat >= 0``, NaN elsewhere in ``out``.

    Rows ordered by column, then row (instrument by instrument) land a whole grid row apart
    (128 KB at 16,000 instruments), a page and a TLB miss each; so, ordered, they are
    written in tiles of 64 columns x 256 rows, each column's rows followed by a cursor."""
    out[:] = np.nan
    if not ordered:
        for k in range(flat.size):
            if flat[k] >= 0:
                out[flat[k]] = values[k]
        return
    cols, rows = 64, 256
    first = np.full(cols, -1, dtype=np.int64)
    stop = np.zeros(cols, dtype=np.int64)
    k = 0
    for c0 in range(0, width, cols):
        first[:] = -1
        # this tile column's rows: the next ones with a column below c0 + cols
        end = c0 + cols
        while k < flat.size and (flat[k] < 0 or flat[k] - (flat[k] // width) * width < end):
            if flat[k] >= 0:
                c = flat[k] - (flat[k] // width) * width - c0
                if first[c] < 0:
                    first[c] = k
                stop[c] = k + 1
            k += 1
        for r0 in range(rows, height + rows, rows):
            limit = r0 * width  # a flat position below this is in a row below r0
            for c in range(cols):
                j = first[c]
                if j < 0:
                    continue
                while j < stop[c] and flat[j] < limit:
                    if flat[j] >= 0:
                        out[flat[j]] = values[j]
                    j += 1
                first[c] = j if j < stop[c] else -1


def index_returns(
    store: Store, name: str, dates: list[object], *, as_of: datetime | str | None = None
) -> np.ndarray:
    """Daily returns on the grid's dates of an index stored as the bars of instrument
    ``name`` (its close is the index level): close to close, a missing day carrying the last
    level forward, 0 on the first day."""
    calendar = pl.Series("date", dates, dtype=pl.Date)
    first, last = calendar.min(), calendar.max()
    assert isinstance(first, date) and isinstance(last, date)
    bars = read_bars(store, ["close"], start=first, end=last, as_of=as_of, adjust="adjusted",
                     instruments=[name])  # fmt: skip
    if bars.height == 0:
        raise UsageError(
            f"--benchmark {name}: {store.location} has no bars of {name!r} over the backtest's "
            "days; ingest the index's daily closes as bars of an instrument of that name, or "
            "leave --benchmark out for the equal-weighted universe"
        )
    level = (
        calendar.to_frame()
        .join(bars.select("date", "close"), on="date", how="left")
        .sort("date")["close"]
        .fill_null(strategy="forward")
        .to_numpy()
    )
    out = np.zeros(level.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[1:] = np.nan_to_num(level[1:] / level[:-1] - 1.0)
    return out


def industry_codes(
    store: Store, grid: Aligned, *, as_of: datetime | str | None = None
) -> tuple[np.ndarray, list[str]]:
    """Each instrument's industry on each day of the grid, as it was classified then (known
    at ``as_of``): codes days x instruments (-1 where none) and the industries' names."""
    from quarry.data import industries

    table = industries(store, as_of).filter(
        pl.col("instrument").is_in(pl.Series(grid.instruments, dtype=pl.String).implode())
    )
    names = sorted(set(table["industry"].to_list()))
    codes = np.full(grid.scores.shape, -1, dtype=np.int16)
    if table.height == 0:
        return codes, names
    calendar = pl.Series(grid.dates, dtype=pl.Date).to_physical().to_numpy()
    position = {name: i for i, name in enumerate(grid.instruments)}
    code = {name: k for k, name in enumerate(names)}
    start = np.searchsorted(calendar, table["valid_from"].to_physical().to_numpy())
    ends = table["valid_to"].to_physical().fill_null(np.iinfo(np.int32).max).to_numpy()
    stop = np.searchsorted(calendar, ends, side="right")  # valid_to is the last day
    for row, (inst, industry) in enumerate(table.select("instrument", "industry").iter_rows()):
        codes[start[row] : stop[row], position[inst]] = code[industry]
    return codes, names
