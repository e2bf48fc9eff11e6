"""The compiled TopK-Dropout engine against the Python engine running the rule day by day."""

from __future__ import annotations

import numpy as np
import pytest

from quarry.backtest._engine import BacktestConfig, Market, simulate
from quarry.backtest._topk_engine import simulate_topk
from quarry.portfolio import topk_dropout_day


def _random_market(seed: int, days: int, n: int) -> tuple[np.ndarray, Market]:
    """Prices with limit moves, suspensions (no bar or zero volume), late listings and
    delistings, and a signal with gaps and ties."""
    rng = np.random.default_rng(seed)
    moves = rng.normal(0, 0.03, (days, n))
    moves[rng.random((days, n)) < 0.03] = 0.1  # limit-up days
    moves[rng.random((days, n)) < 0.03] = -0.1  # limit-down days
    close = 10 * np.exp(np.cumsum(moves, axis=0))
    volume = rng.uniform(1e4, 1e6, (days, n))
    volume[rng.random((days, n)) < 0.03] = 0.0
    close[rng.random((days, n)) < 0.02] = np.nan
    for i in range(n):
        if rng.random() < 0.3:
            close[rng.integers(days // 2, days) :, i] = np.nan  # delisted
        if rng.random() < 0.2:
            close[: rng.integers(1, days // 2), i] = np.nan  # listed late
    volume[np.isnan(close)] = np.nan
    deal = close * rng.uniform(0.99, 1.01, close.shape)
    scores = np.round(rng.normal(size=(days, n)), 1)  # rounding makes ties
    scores[rng.random((days, n)) < 0.1] = np.nan
    return scores, Market(deal=deal, close=close, volume=volume)


CONFIGS = [
    BacktestConfig(account=1e6),
    BacktestConfig(account=3e4, min_cost=5, lot_size=100, slippage=0.001, impact=0.5),
    BacktestConfig(
        account=1e7,
        open_cost=0.0,
        close_cost=0.0,
        min_cost=0.0,
        limit_threshold=None,
        delist_return=-0.3,
        risk_degree=1.0,
    ),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", range(len(CONFIGS)))
@pytest.mark.parametrize(("topk", "n_drop", "hold"), [(5, 2, 1), (8, 3, 3), (4, 0, 1), (3, 3, 2)])
def test_the_compiled_engine_matches_the_python_engine(
    seed: int, k: int, topk: int, n_drop: int, hold: int
) -> None:
    scores, market = _random_market(seed, 80, 25)
    config = CONFIGS[k]

    def rule(s, held, days_held, can_buy, can_sell):  # type: ignore[no-untyped-def]
        # plan only: the engine blocks what cannot trade, as Qlib's exchange does
        return topk_dropout_day(s, held, days_held, topk=topk, n_drop=n_drop, hold_thresh=hold)

    if seed == 2:  # a few names without any volume in the store: their prices decide
        known = np.arange(market.close.shape[1]) % 4 != 0
        volume = np.where(known, market.volume, np.nan)
        market = Market(market.deal, market.close, volume, volume_known=known)
    ref = simulate(scores, market, rule, config)
    got = simulate_topk(scores, market, config, topk=topk, n_drop=n_drop, hold_thresh=hold)
    np.testing.assert_array_equal(got.shares, ref.shares)
    np.testing.assert_allclose(got.value, ref.value, rtol=1e-12)
    np.testing.assert_allclose(got.cash, ref.cash, rtol=1e-12, atol=1e-6)
    np.testing.assert_allclose(got.costs, ref.costs, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(got.turnover, ref.turnover, rtol=1e-12, atol=1e-15)

    def table(orders: dict[str, np.ndarray]) -> np.ndarray:
        t = np.column_stack([orders[c] for c in orders])
        return t[np.lexsort((t[:, 2], t[:, 1], t[:, 0]))]  # by day, instrument, side

    np.testing.assert_allclose(table(got.orders), table(ref.orders), rtol=1e-12, atol=1e-9)
    if n_drop and config.limit_threshold is not None:  # the case exercises the blocks
        assert (ref.orders["status"] == 2).any()
    if topk >= 5:
        assert (ref.orders["status"] == 3).any()  # a delisting was liquidated
