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

    index = (
        pl.DataFrame({"instrument": instruments, "i": np.arange(shape[1])}),
        pl.DataFrame({"date": dates, "d": np.arange(shape[0])}),
    )

    def lay(frame: pl.DataFrame, column: str) -> np.ndarray:
        """Scatter a long column onto the grid; rows off the grid are dropped (joins on
        integer positions: comparing 40M instrument names one by one was a minute)."""
        keyed = (
            frame.lazy()
            .select(pl.col("instrument").cast(pl.String), pl.col("date").cast(pl.Date), column)
            .join(index[0].lazy(), on="instrument")
            .join(index[1].lazy(), on="date")
            .collect()
        )
        out = np.full(shape, np.nan)
        values = keyed[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
        out[keyed["d"].to_numpy(), keyed["i"].to_numpy()] = values
        return out

    scores = lay(signal, "score")
    if universe is not None:
        members = read_bars(store, ["close"], start=first, as_of=as_of, universe=universe)
        member = np.isfinite(lay(members, "close"))
        scores = np.where(member, scores, np.nan)
    market = Market(
        deal=lay(bars, deal_price), close=lay(bars, "close"), volume=lay(bars, "volume")
    )
    return Aligned(dates.to_list(), instruments.to_list(), scores, market)
