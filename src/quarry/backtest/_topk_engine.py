"""TopK-Dropout simulated in one compiled loop: ``simulate`` with ``topk_dropout_day`` as its
rule, the same orders and values, without a Python step per day.

Per day the work is proportional to the instruments once (the last prices, and one pass to
find the best names not held) plus the book: the held names are ranked among themselves and
merged with the newcomers; nothing sorts the whole cross-section. Ranking is the rule's:
score descending, ties to the lower instrument position, a missing score last.
"""

from __future__ import annotations

import numpy as np

from quarry._jit import njit
from quarry.backtest._engine import BacktestConfig, Market, Simulation, finish
from quarry.backtest._fills import buy_shares, fee, slip_rate
from quarry.exceptions import UsageError

__all__ = ["simulate_topk"]


def simulate_topk(
    scores: np.ndarray,
    market: Market,
    config: BacktestConfig,
    *,
    topk: int,
    n_drop: int,
    hold_thresh: int = 1,
) -> Simulation:
    """TopK-Dropout (Qlib's rule, see ``quarry.portfolio.topk_dropout_day``) on ``scores``
    (days x instruments, day t's scores trading on day t+1) over ``market``."""
    from quarry.portfolio import check_topk_params

    check_topk_params(topk, n_drop, hold_thresh)
    days, n = market.close.shape
    if scores.shape != (days, n):
        raise UsageError(f"the signal covers {scores.shape}, the market {(days, n)}")
    close = np.ascontiguousarray(market.close, dtype=np.float64)
    c = config
    limit = np.inf if c.limit_threshold is None else float(c.limit_threshold)
    capacity = days * (topk + 2 * n_drop) + n + 1
    out = _run(
        np.ascontiguousarray(scores, dtype=np.float64),
        np.ascontiguousarray(market.deal, dtype=np.float64),
        close,
        np.ascontiguousarray(market.volume, dtype=np.float64),
        market.known(),
        market.last_days(),
        topk, n_drop, hold_thresh, float(c.account), c.open_cost, c.close_cost, c.min_cost,
        limit, float(c.lot_size), c.risk_degree, c.delist_return, c.slippage, c.impact,
        capacity,
    )  # fmt: skip
    value, cash, costs, traded, shares, table, rows = out
    return finish(value, cash, costs, traded, shares, table[:rows])


@njit(cache=True)
def _before(s_a: float, a: int, s_b: float, b: int) -> bool:
    """Whether a ranks before b: higher score first, a missing score last, ties by position."""
    if s_a != s_a:
        return s_b != s_b and a < b
    if s_b != s_b:
        return True
    if s_a != s_b:
        return s_a > s_b
    return a < b


@njit(cache=True)
def _record(
    table: np.ndarray,
    row: int,
    day: float,
    i: float,
    side: float,
    shares: float,
    price: float,
    value: float,
    cost: float,
    slip: float,
    status: float,
) -> int:
    """One order row (ORDER_COLUMNS) at ``row``; the next free row."""
    out = table[row]
    out[0], out[1], out[2], out[3], out[4] = day, i, side, shares, price
    out[5], out[6], out[7], out[8] = value, cost, slip, status
    return row + 1


@njit(cache=True)
def _rank(idx: np.ndarray, count: int, s: np.ndarray) -> None:
    """Sort ``idx[:count]`` by rank, in place (insertion sort: the book is small)."""
    for k in range(1, count):
        item = idx[k]
        j = k - 1
        while j >= 0 and _before(s[item], item, s[idx[j]], idx[j]):
            idx[j + 1] = idx[j]
            j -= 1
        idx[j + 1] = item


@njit(cache=True)
def _best_not_held(s: np.ndarray, held: np.ndarray, want: int, out: np.ndarray) -> int:
    """The first ``want`` scored names not held, by rank, into ``out``; how many there are."""
    count = 0
    if want <= 0:
        return 0
    for i in range(s.size):
        v = s[i]
        if held[i] or v != v:
            continue
        if count == want and not _before(v, i, s[out[count - 1]], out[count - 1]):
            continue
        j = count - 1 if count == want else count
        while j > 0 and _before(v, i, s[out[j - 1]], out[j - 1]):
            out[j] = out[j - 1]
            j -= 1
        out[j] = i
        if count < want:
            count += 1
    return count


@njit(cache=True)
def _run(
    scores: np.ndarray,
    deal: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    volume_known: np.ndarray,
    last_bar: np.ndarray,
    topk: int,
    n_drop: int,
    hold_thresh: int,
    account: float,
    open_cost: float,
    close_cost: float,
    min_cost: float,
    limit: float,
    lot: float,
    risk_degree: float,
    delist_return: float,
    slippage: float,
    impact: float,
    capacity: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    days, n = close.shape
    value = np.zeros(days)
    cash = np.zeros(days)
    costs = np.zeros(days)
    traded = np.zeros(days)
    shares = np.zeros((days, n))
    table = np.zeros((capacity, 9))
    rows = 0
    pos = np.zeros(n)
    held = np.zeros(n, dtype=np.bool_)
    held_days = np.zeros(n, dtype=np.int64)
    last = close[0].copy()
    book = np.empty(n, dtype=np.int64)  # the held names by position, then by rank
    today = np.empty(topk + n_drop, dtype=np.int64)
    sells = np.empty(n_drop + 1, dtype=np.int64)
    cash[0] = value[0] = account
    money = account
    for day in range(1, days):
        for i in range(n):
            if close[day, i] == close[day, i]:
                last[i] = close[day, i]
        day_cost = 0.0
        day_traded = 0.0
        # 1. delistings, by position (cash sums in the Python engine's order)
        n_book = 0
        for i in range(n):
            if not held[i]:
                continue
            if last_bar[i] < day:
                proceeds = pos[i] * last[i] * (1.0 + delist_return)
                money += proceeds
                day_traded += proceeds
                rows = _record(table, rows, day, i, -1.0, pos[i], last[i], proceeds, 0.0, 0.0, 3.0)
                pos[i] = 0.0
                held[i] = False
                held_days[i] = 0
            else:
                book[n_book] = i
                n_book += 1
        # 2. TopK-Dropout's plan on yesterday's scores
        s = scores[day - 1]
        _rank(book, n_book, s)
        n_today = _best_not_held(s, held, max(n_drop + topk - n_book, 0), today)
        # sell: the held names among the last n_drop of comb (book and today by rank), found
        # by walking both from their worst end
        n_sell = 0
        a, t = n_book - 1, n_today - 1
        for _ in range(n_drop):
            if a < 0:
                break
            if t >= 0 and _before(s[book[a]], book[a], s[today[t]], today[t]):
                t -= 1  # the worse end is a newcomer
            else:
                sells[n_sell] = book[a]
                n_sell += 1
                a -= 1
        n_buy = min(max(n_sell + topk - n_book, 0), n_today)
        sells[:n_sell].sort()  # fill in position order, as the Python engine does
        price = deal[day]
        # 3a. sells held long enough, unless blocked
        for q in range(n_sell):
            i = sells[q]
            if held_days[i] < hold_thresh:
                continue
            active = price[i] == price[i] and (volume[day, i] > 0.0 or not volume_known[i])
            if not active or close[day, i] / close[day - 1, i] - 1.0 <= -limit:
                status = 2.0 if active else 1.0
                rows = _record(table, rows, day, i, -1.0, pos[i], price[i], 0.0, 0.0, 0.0, status)
                continue
            amount = pos[i] * price[i]
            cost = fee(amount, close_cost, min_cost)
            slip = amount * slip_rate(pos[i], volume[day, i], slippage, impact)
            money += amount - cost - slip
            day_cost += cost + slip
            day_traded += amount
            rows = _record(table, rows, day, i, -1.0, pos[i], price[i], amount, cost, slip, 0.0)
            pos[i] = 0.0
            held[i] = False
            held_days[i] = 0
        # 3b. the planned buys, best first, share the cash; a blocked one keeps its share
        if n_buy > 0:
            budget = money * risk_degree / n_buy
            for q in range(n_buy):
                i = today[q]
                active = price[i] == price[i] and (volume[day, i] > 0.0 or not volume_known[i])
                if not active or close[day, i] / close[day - 1, i] - 1.0 >= limit:
                    status = 2.0 if active else 1.0
                    rows = _record(table, rows, day, i, 1.0, 0.0, price[i], 0.0, 0.0, 0.0, status)
                    continue
                count = buy_shares(budget, money, price[i], open_cost, min_cost, lot,
                                   volume[day, i], slippage, impact)  # fmt: skip
                if count <= 0.0:
                    continue
                amount = count * price[i]
                cost = fee(amount, open_cost, min_cost)
                slip = amount * slip_rate(count, volume[day, i], slippage, impact)
                money -= amount + cost + slip
                day_cost += cost + slip
                day_traded += amount
                rows = _record(table, rows, day, i, 1.0, count, price[i], amount, cost, slip, 0.0)
                pos[i] = count
                held[i] = True
        # 4. holding counts and the mark at the close
        mark = 0.0
        for i in range(n):
            if held[i]:
                held_days[i] += 1
                shares[day, i] = pos[i]
                mark += pos[i] * last[i]
        cash[day] = money
        value[day] = money + mark
        costs[day] = day_cost
        traded[day] = day_traded
    return value, cash, costs, traded, shares, table, rows
