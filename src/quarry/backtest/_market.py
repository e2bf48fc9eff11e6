"""The market a backtest trades in, as dense panels from the store, and a signal on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import polars as pl

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
    outside ``universe`` (on a day the instrument was not a member) is dropped."""
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
    calendar = dates.cast(pl.Date).to_physical().to_numpy()

    def positions(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Grid positions of a long frame's rows: instruments by an enum cast, dates by a
        binary search on day numbers (comparing 40M names one by one took a minute at
        16,000 instruments); ``ok`` drops rows off the grid."""
        names_in = frame["instrument"].cast(pl.String)
        known = names_in.is_in(names.implode()).to_numpy()
        i = np.zeros(frame.height, dtype=np.int64)
        i[known] = names_in.filter(known).cast(enum).to_physical().to_numpy()
        days = frame["date"].cast(pl.Date).to_physical().to_numpy()
        d = np.minimum(np.searchsorted(calendar, days), calendar.size - 1)
        ok = known & (calendar[d] == days)
        return d[ok], i[ok], ok

    def lay(frame: pl.DataFrame, column: str, at: tuple[np.ndarray, ...]) -> np.ndarray:
        d, i, ok = at
        out = np.full(shape, np.nan)
        out[d, i] = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()[ok]
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
