"""Target-weight strategies and their simulation: long-short quantiles and score weights.

A weight strategy turns each day's scores into target weights (positive long, negative
short, as shares of the portfolio's value). The simulation trades toward them the next day,
with the same timing, costs and trading limits as ``simulate``: an order on an instrument
that cannot trade (suspended; a buy at limit-up, a sell at limit-down) is not filled, the
position stays as it was, and the order is recorded as blocked. Shorts are allowed here
(gross leverage up to ``leverage``); short sale proceeds are held as cash, so the
portfolio's value is cash plus the signed positions.
A delisted position is closed at its last close times 1 + ``delist_return``. A day whose
targets are all NaN has no new target (an optimizer between rebalances): nothing trades.
Fees and slippage are those of ``_fills``.
"""

from __future__ import annotations

import warnings

import numpy as np

from quarry.backtest._engine import (
    ORDER_COLUMNS,
    BacktestConfig,
    Market,
    Simulation,
    finish,
)
from quarry.exceptions import UsageError

__all__ = ["long_short_weights", "score_weights", "simulate_weights"]


def long_short_weights(scores: np.ndarray, quantile: float = 0.2) -> np.ndarray:
    """Equal weights long the top ``quantile`` of each day's scores (summing to +0.5) and
    short the bottom one (summing to -0.5): dollar-neutral, gross leverage 1."""
    if not 0 < quantile <= 0.5:
        raise UsageError(f"long-short quantile {quantile}: give a share in (0, 0.5]")
    weights = np.zeros_like(scores)
    for day, row in enumerate(scores):
        valid = np.flatnonzero(np.isfinite(row))
        k = int(np.floor(valid.size * quantile))
        if k == 0:
            continue
        order = valid[np.argsort(row[valid], kind="stable")]
        weights[day, order[-k:]] = 0.5 / k
        weights[day, order[:k]] = -0.5 / k
    return weights


def score_weights(scores: np.ndarray) -> np.ndarray:
    """Long-only weights in proportion to each day's scores above their mean, summing to 1."""
    weights = np.zeros_like(scores)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a day with no score: no weight
        excess = np.clip(scores - np.nanmean(scores, axis=1, keepdims=True), 0.0, None)
    excess = np.nan_to_num(excess)
    total = excess.sum(axis=1, keepdims=True)
    np.divide(excess, total, out=weights, where=total > 0)
    return weights


def simulate_weights(
    targets: np.ndarray, market: Market, config: BacktestConfig, *, leverage: float = 1.0
) -> Simulation:
    """Trade toward ``targets`` (days x instruments weights dated when known: day t's
    targets trade on day t+1) and mark to market at each close."""
    days, n = market.close.shape
    if targets.shape != (days, n):
        raise UsageError(f"the targets cover {targets.shape}, the market {(days, n)}")
    gross_exposure = np.nansum(np.abs(targets), axis=1)
    if np.any(gross_exposure > leverage + 1e-9):
        worst = int(np.argmax(gross_exposure))
        raise UsageError(
            f"day {worst}: the targets' gross exposure {gross_exposure[worst]:.3f} exceeds the "
            f"allowed leverage {leverage}; scale them down or allow more"
        )
    alive_after = market.alive_after()
    value, cash = np.zeros(days), np.zeros(days)
    costs, traded = np.zeros(days), np.zeros(days)
    shares = np.zeros((days, n))
    rows: list[np.ndarray] = []
    value[0] = cash[0] = config.account
    last = np.where(np.isfinite(market.close[0]), market.close[0], np.nan)
    for day in range(1, days):
        pos = shares[day - 1].copy()
        money = cash[day - 1]
        last = np.where(np.isfinite(market.close[day]), market.close[day], last)
        gone = (pos != 0) & ~alive_after[day]
        if gone.any():
            proceeds = pos[gone] * last[gone] * (1.0 + config.delist_return)
            money += proceeds.sum()
            traded[day] += np.abs(proceeds).sum()
            rows.append(_orders(day, np.flatnonzero(gone), -pos[gone], last[gone], 0.0, 3))
            pos[gone] = 0.0
        price = market.deal[day]
        volume = market.volume[day]
        active = market.active(day)
        target = targets[day - 1]
        if np.isnan(target).all():  # no new target: hold, marked to market
            shares[day], cash[day] = pos, money
            value[day] = money + np.nansum(pos * last)
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            move = market.close[day] / market.close[day - 1] - 1.0
        worth = money + np.nansum(pos * last)
        wanted = np.where(active, np.nan_to_num(target) * worth / np.where(active, price, 1.0), pos)
        lots = config.lot_size
        wanted = np.trunc(wanted / lots) * lots
        delta = np.where(active, wanted - pos, 0.0)
        # a suspended name's trade toward its target (sized at its last close) is recorded as
        # blocked, as the other engines record theirs
        idle = np.flatnonzero(~active & ((np.nan_to_num(target) != 0) | (pos != 0)))
        if idle.size:
            with np.errstate(invalid="ignore", divide="ignore"):
                size = np.trunc(np.nan_to_num(target[idle]) * worth / last[idle] / lots) * lots
            size = np.nan_to_num(size - pos[idle], nan=0.0, posinf=0.0, neginf=0.0)
            if (size != 0).any():
                idx = idle[size != 0]
                rows.append(_orders(day, idx, size[size != 0], price[idx], 0.0, 1))
        if config.limit_threshold is not None:
            blocked = ((delta > 0) & (move >= config.limit_threshold)) | (
                (delta < 0) & (move <= -config.limit_threshold)
            )
            if blocked.any():
                idx = np.flatnonzero(blocked)
                rows.append(_orders(day, idx, delta[idx], price[idx], 0.0, 2))
            delta = np.where(blocked, 0.0, delta)
        trade = np.flatnonzero(delta != 0)
        if trade.size:
            amount = delta[trade] * price[trade]
            rate = np.where(delta[trade] > 0, config.open_cost, config.close_cost)
            fee = np.maximum(np.abs(amount) * rate, config.min_cost)
            slip = np.abs(amount) * config.slippage
            if config.impact:
                slip += np.abs(amount) * config.impact * np.abs(delta[trade]) / volume[trade]
            money -= amount.sum() + fee.sum() + slip.sum()
            costs[day] = fee.sum() + slip.sum()
            traded[day] += np.abs(amount).sum()
            pos[trade] += delta[trade]
            rows.append(_orders(day, trade, delta[trade], price[trade], fee, 0, slip))
        shares[day] = pos
        cash[day] = money
        value[day] = money + np.nansum(pos * last)
    table = np.concatenate(rows) if rows else np.zeros((0, len(ORDER_COLUMNS)))
    return finish(value, cash, costs, traded, shares, table)


def _orders(
    day: int,
    idx: np.ndarray,
    delta: np.ndarray,
    price: np.ndarray,
    fee: np.ndarray | float,
    status: int,
    slip: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Order rows by ``ORDER_COLUMNS``; status 0 filled, 1 blocked: suspended, 2 blocked at a
    limit, 3 closed at delisting. A blocked order trades no value."""
    out = np.empty((idx.size, len(ORDER_COLUMNS)))
    out[:, 0] = day
    out[:, 1] = idx
    out[:, 2] = np.sign(delta)
    out[:, 3] = np.abs(delta)
    out[:, 4] = price
    out[:, 5] = np.abs(delta * price) if status in (0, 3) else 0.0
    out[:, 6] = fee
    out[:, 7] = slip
    out[:, 8] = status
    return out
