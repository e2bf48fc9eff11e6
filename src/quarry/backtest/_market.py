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

    def lay(frame: pl.DataFrame, column: str) -> np.ndarray:
        d = dates.search_sorted(frame["date"]).to_numpy()
        i = instruments.search_sorted(frame["instrument"]).to_numpy()
        ok = (d < shape[0]) & (i < shape[1])
        ok &= dates.gather(np.minimum(d, shape[0] - 1)).to_numpy() == frame["date"].to_numpy()
        ok &= (
            instruments.gather(np.minimum(i, shape[1] - 1)).to_numpy()
            == frame["instrument"].to_numpy()
        )
        out = np.full(shape, np.nan)
        out[d[ok], i[ok]] = frame[column].cast(pl.Float64).fill_null(np.nan).to_numpy()[ok]
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
