"""How one order fills: its fee, its slippage, and how many shares a buy's budget gets.

Compiled with numba so that the Python engine (any rule) and the compiled TopK-Dropout engine
share one definition of a fill; called from Python they are plain functions.

- Fee: ``max(value * rate, min_cost)``, ``rate`` being the open (buy) or close (sell) cost.
- Slippage: a share of the traded value, ``slippage + impact * participation``, where
  participation is the order's shares over the day's volume (both adjusted, so a split does
  not change it). It is counted as a cost, apart from the fee.
- Buy size, Qlib's (``TopkDropoutStrategy`` and ``Exchange._calc_trade_info_by_order``): the
  budget divided by the price, rounded down to whole lots; the fee comes on top. A buy the
  remaining cash cannot pay for with its fee and slippage is cut to what the cash can buy.
"""

from __future__ import annotations

import math

from quarry._jit import njit

__all__ = ["buy_shares", "fee", "slip_rate"]


@njit(cache=True)
def fee(value: float, rate: float, min_cost: float) -> float:
    return max(value * rate, min_cost)


@njit(cache=True)
def slip_rate(shares: float, volume: float, slippage: float, impact: float) -> float:
    if impact == 0.0 or not volume > 0.0:
        return slippage
    return slippage + impact * shares / volume


@njit(cache=True)
def buy_shares(
    budget: float,
    cash: float,
    price: float,
    rate: float,
    min_cost: float,
    lot: float,
    volume: float,
    slippage: float,
    impact: float,
) -> float:
    """Shares bought with ``budget`` (whole lots), cut to what ``cash`` pays for with the
    fee and slippage; 0 when not even one lot fits."""
    if not (price > 0.0) or budget <= 0.0:
        return 0.0
    shares = math.floor(budget / price / lot) * lot
    if shares <= 0.0:
        return 0.0
    value = shares * price
    slip = slip_rate(shares, volume, slippage, impact)
    if value + fee(value, rate, min_cost) + value * slip <= cash:
        return shares
    # The most the cash buys: the fee is proportional above the minimum, fixed below it (the
    # slippage at the planned size bounds the smaller order's, so the cut always fits).
    if cash * rate / (1.0 + rate + slip) >= min_cost:
        most = cash / (price * (1.0 + rate + slip))
    else:
        most = (cash - min_cost) / (price * (1.0 + slip))
    shares = math.floor(most / lot) * lot
    return max(shares, 0.0)
