"""The daily simulation: a signal becomes orders, fills, costs, positions and returns.

Timing is enforced: the signal dated t is acted on at t+1, at that day's deal price (open,
close or vwap), never earlier. On each trading day:

1. a held instrument that has left the market (its last bar was the day before) is
   liquidated at its last close, times 1 + ``delist_return``: never silently dropped;
2. the strategy plans sells and buys from the previous day's scores and the holdings; a
   planned order that cannot trade today is recorded as blocked and not filled: no trade on
   a suspension (no deal price, or no or zero volume when the store has the instrument's
   volume at all: ``Market.active``), no buy at limit-up and no sell at limit-down
   (close-to-close move beyond ``limit_threshold``);
3. sells fill first, then the planned buys share the cash (times ``risk_degree``), best
   score first, as Qlib's TopK-Dropout does; sizes, fees (``open_cost`` for a buy,
   ``close_cost`` for a sell, at least ``min_cost``) and slippage are in ``_fills``; no
   leverage: buys never spend more than the cash;
4. the portfolio is marked to market at the close.

Returns are value changes over the previous day's value: ``net`` after costs (fees and
slippage), ``gross`` with the day's costs added back. Turnover is the traded value over the
previous day's value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from quarry.backtest._config import BacktestConfig
from quarry.backtest._fills import buy_shares, fee, slip_rate
from quarry.exceptions import UsageError

__all__ = ["ORDER_COLUMNS", "BacktestConfig", "Market", "Simulation", "finish", "simulate"]

# (scores, held, days_held, can_buy, can_sell) -> (sell, buy) masks over the instruments
Rule = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]


def last_bars(close: np.ndarray) -> np.ndarray:
    """Each instrument's last day (row) with a close, -1 for none."""
    has = np.isfinite(close)
    last = close.shape[0] - 1 - np.argmax(has[::-1], axis=0)
    return np.where(has.any(axis=0), last, -1).astype(np.int64)


@dataclass(frozen=True)
class Market:
    """Dense days x instruments panels, NaN where an instrument has no bar that day.

    ``deal`` is the execution price (adjusted like ``close``), ``volume`` the day's volume.
    ``volume_known``: per instrument, whether the store has its volume at all; an
    instrument without (a store of closes only) is tradable on any day with a deal price,
    where one with volume is suspended on a day without volume or with none traded. None:
    every instrument's volume is known.
    """

    deal: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    volume_known: np.ndarray | None = None
    #: per instrument, the last day it can be held: its last bar when it is delisted, the
    #: grid's last day when the store knows it still listed (its missing bars are then
    #: suspensions, not a delisting). None: every instrument's last bar.
    held_until: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not (self.deal.shape == self.close.shape == self.volume.shape):
            raise UsageError("market panels must have the same days x instruments shape")
        if self.volume_known is not None and self.volume_known.shape != self.close.shape[1:]:
            raise UsageError("volume_known must have one value per instrument")
        if self.held_until is not None and self.held_until.shape != self.close.shape[1:]:
            raise UsageError("held_until must have one value per instrument")

    def last_days(self) -> np.ndarray:
        """Each instrument's last day that it can be held (-1 for none): a holding is
        delisted, closed at its last close, on the day after it."""
        if self.held_until is not None:
            return np.asarray(self.held_until, dtype=np.int64)
        return last_bars(self.close)

    def alive_after(self) -> np.ndarray:
        """True where an instrument can still be held on this day or a later one."""
        return np.arange(self.close.shape[0])[:, None] <= self.last_days()[None, :]

    def known(self) -> np.ndarray:
        """``volume_known`` as a boolean array (all true when None)."""
        if self.volume_known is None:
            return np.ones(self.close.shape[1], dtype=np.bool_)
        return np.asarray(self.volume_known, dtype=np.bool_)

    def active(self, day: int) -> np.ndarray:
        """Who is not suspended on ``day``: a deal price, and volume traded unless the
        instrument's volume is unknown."""
        traded: np.ndarray = np.nan_to_num(self.volume[day]) > 0
        out: np.ndarray = np.isfinite(self.deal[day]) & (traded | ~self.known())
        return out


# day, instrument, side (+1 buy / -1 sell), shares, price, value, cost (the fee), slippage,
# status (0 filled, 1 blocked: suspended, 2 blocked: limit, 3 delisted)
ORDER_COLUMNS = (
    "day", "instrument", "side", "shares", "price", "value", "cost", "slippage", "status",
)  # fmt: skip


@dataclass(frozen=True)
class Simulation:
    """Daily results (index 0 is the first day, with no trade), and every order."""

    value: np.ndarray
    cash: np.ndarray
    net: np.ndarray
    gross: np.ndarray
    turnover: np.ndarray
    costs: np.ndarray
    shares: np.ndarray  # days x instruments, after the day's trades
    orders: dict[str, np.ndarray]  # by ORDER_COLUMNS


def _tradability(
    market: Market, day: int, limit: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who can trade today: a deal price and volume (``Market.active``); buys not at
    limit-up, sells not at limit-down (the close-to-close move from the previous bar day)."""
    close, prev = market.close[day], market.close[day - 1]
    active = market.active(day)
    can_buy, can_sell = active.copy(), active.copy()
    if limit is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            move = close / prev - 1.0
        can_buy &= ~(move >= limit)
        can_sell &= ~(move <= -limit)
    return active, can_buy, can_sell


def simulate(scores: np.ndarray, market: Market, rule: Rule, config: BacktestConfig) -> Simulation:
    """Run ``rule`` over the days of ``market`` with the signal ``scores`` (days x
    instruments, dated when known: day t's scores trade on day t+1).

    ``rule`` plans the day's sells and buys; orders it plans that cannot trade are recorded
    as blocked and not filled. For TopK-Dropout the compiled ``simulate_topk`` gives the same
    result far faster."""
    days, n = market.close.shape
    if scores.shape != (days, n):
        raise UsageError(f"the signal covers {scores.shape}, the market {(days, n)}")
    c = config
    alive_after = market.alive_after()
    value, cash, costs, traded = np.zeros(days), np.zeros(days), np.zeros(days), np.zeros(days)
    shares = np.zeros((days, n))
    orders: list[tuple[float, ...]] = []
    held_days = np.zeros(n, dtype=np.int64)
    cash[0] = value[0] = c.account
    last_price = np.where(np.isfinite(market.close[0]), market.close[0], np.nan)
    volume = market.volume
    for day in range(1, days):
        pos = shares[day - 1].copy()
        money = cash[day - 1]
        price_now = market.close[day]
        last_price = np.where(np.isfinite(price_now), price_now, last_price)
        day_cost = 0.0
        day_traded = 0.0
        # 1. delistings: held, and no bar from today on
        gone = (pos > 0) & ~alive_after[day]
        for i in np.flatnonzero(gone).tolist():
            proceeds = pos[i] * last_price[i] * (1.0 + c.delist_return)
            money += proceeds
            day_traded += proceeds
            orders.append((day, i, -1, pos[i], last_price[i], proceeds, 0.0, 0.0, 3))
            pos[i] = 0.0
        # 2. decisions on yesterday's signal
        active, can_buy, can_sell = _tradability(market, day, c.limit_threshold)
        held = pos > 0
        sell, buy = rule(scores[day - 1], held, held_days, can_buy, can_sell)
        sell &= held
        buy &= ~held
        price = market.deal[day]
        # 3a. sells
        for i in np.flatnonzero(sell).tolist():
            if not can_sell[i]:
                status = 1 if not active[i] else 2
                orders.append((day, i, -1, pos[i], price[i], 0.0, 0.0, 0.0, status))
                continue
            amount = pos[i] * price[i]
            cost = fee(amount, c.close_cost, c.min_cost)
            slip = amount * slip_rate(pos[i], volume[day, i], c.slippage, c.impact)
            money += amount - cost - slip
            day_cost += cost + slip
            day_traded += amount
            orders.append((day, i, -1, pos[i], price[i], amount, cost, slip, 0))
            pos[i] = 0.0
        # 3b. buys share the cash, best score first (Qlib's order); a blocked buy keeps its
        # share of the budget unspent, as in Qlib
        wanted = np.flatnonzero(buy)
        if wanted.size:
            wanted = wanted[np.argsort(-scores[day - 1, wanted], kind="stable")]
            budget = money * c.risk_degree / wanted.size
            for i in wanted.tolist():
                if not can_buy[i]:
                    status = 1 if not active[i] else 2
                    orders.append((day, i, 1, 0.0, price[i], 0.0, 0.0, 0.0, status))
                    continue
                count = buy_shares(budget, money, price[i], c.open_cost, c.min_cost,
                                   c.lot_size, volume[day, i], c.slippage, c.impact)  # fmt: skip
                if count <= 0:
                    continue
                amount = count * price[i]
                cost = fee(amount, c.open_cost, c.min_cost)
                slip = amount * slip_rate(count, volume[day, i], c.slippage, c.impact)
                money -= amount + cost + slip
                day_cost += cost + slip
                day_traded += amount
                pos[i] = count
                orders.append((day, i, 1, count, price[i], amount, cost, slip, 0))
        held_days = np.where(pos > 0, held_days + 1, 0)
        shares[day] = pos
        cash[day] = money
        mark = np.where(pos > 0, np.nan_to_num(last_price) * pos, 0.0)
        value[day] = money + mark.sum()
        costs[day] = day_cost
        traded[day] = day_traded
    table = np.array(orders, dtype=float).reshape(-1, len(ORDER_COLUMNS))
    return finish(value, cash, costs, traded, shares, table)


def finish(
    value: np.ndarray,
    cash: np.ndarray,
    costs: np.ndarray,
    traded: np.ndarray,
    shares: np.ndarray,
    table: np.ndarray,
) -> Simulation:
    """Daily returns and turnover from the values, and the order table by column."""
    days = value.size
    net, gross, turnover = np.zeros(days), np.zeros(days), np.zeros(days)
    net[1:] = value[1:] / value[:-1] - 1.0
    gross[1:] = (value[1:] + costs[1:]) / value[:-1] - 1.0
    turnover[1:] = traded[1:] / value[:-1]
    return Simulation(
        value, cash, net, gross, turnover, costs, shares,
        {col: table[:, k] for k, col in enumerate(ORDER_COLUMNS)},
    )  # fmt: skip
