"""The market a backtest trades in, as dense panels from the store, and a signal on them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import polars as pl

from quarry.backtest._engine import Market
from quarry.data import Store, read_bars
from quarry.exceptions import UsageError

__all__ = ["DEAL_PRICES", "Aligned", "align"]

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
