"""Target-weight strategies and their simulation, on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from quarry.backtest._engine import BacktestConfig, Market
from quarry.backtest._weights import long_short_weights, score_weights, simulate_weights
from quarry.exceptions import UsageError

FREE = BacktestConfig(account=1000.0, open_cost=0.0, close_cost=0.0, min_cost=0.0,
                      limit_threshold=0.095)  # fmt: skip


def _market(close: list[list[float]]) -> Market:
    c = np.array(close, dtype=float)
    return Market(deal=c.copy(), close=c, volume=np.where(np.isfinite(c), 100.0, np.nan))


def test_long_short_weights_are_dollar_neutral_quantiles() -> None:
    scores = np.array([[5.0, 1.0, 3.0, np.nan, 2.0, 4.0]])
    w = long_short_weights(scores, quantile=0.4)  # 5 valid -> 2 long, 2 short
    np.testing.assert_allclose(w, [[0.25, -0.25, 0.0, 0.0, -0.25, 0.25]])
    assert w.sum() == pytest.approx(0.0) and np.abs(w).sum() == pytest.approx(1.0)


def test_score_weights_follow_scores_above_the_mean() -> None:
    w = score_weights(np.array([[1.0, 2.0, 6.0, np.nan]]))  # mean 3: only 6 is above, by 3
    np.testing.assert_allclose(w, [[0.0, 0.0, 1.0, 0.0]])
    w = score_weights(np.array([[4.0, 2.0, 6.0]]))  # mean 4: 6 is above by 2
    np.testing.assert_allclose(w, [[0.0, 0.0, 1.0]])


def test_a_short_gains_when_the_price_falls() -> None:
    market = _market([[10.0, 10.0], [10.0, 10.0], [11.0, 9.5]])
    targets = np.array([[0.5, -0.5], [0.5, -0.5], [0.0, 0.0]])
    sim = simulate_weights(targets, market, FREE)
    assert sim.shares[1].tolist() == [50.0, -50.0]
    # +50 x 1.0 on the long, +50 x 0.5 on the short
    assert sim.value[2] == pytest.approx(1000.0 + 50.0 + 25.0)
    assert sim.net[2] == pytest.approx(75.0 / 1000.0)


def test_costs_and_limits_and_leverage() -> None:
    market = _market([[10.0], [10.0], [11.0]])
    config = BacktestConfig(account=1000.0, open_cost=0.01, close_cost=0.0, min_cost=0.0)
    sim = simulate_weights(np.array([[0.5], [1.0], [0.0]]), market, config)
    assert sim.costs[1] == pytest.approx(500.0 * 0.01)
    assert sim.net[1] == pytest.approx(-5.0 / 1000.0)
    # day 2 moves +10%: the buy toward 100% is blocked at limit-up, the position stays
    assert sim.shares[2, 0] == sim.shares[1, 0] == 50.0
    with pytest.raises(UsageError, match="exceeds the allowed leverage"):
        simulate_weights(np.array([[1.5], [0.0], [0.0]]), market, FREE)


def test_a_delisted_position_is_closed_at_its_last_close() -> None:
    market = _market([[10.0, 10.0], [10.0, 10.0], [12.0, 10.0], [np.nan, 10.0]])
    targets = np.array([[0.5, 0.0], [0.5, 0.0], [0.5, 0.0], [0.0, 0.0]])
    sim = simulate_weights(targets, market, FREE)
    assert sim.shares[3, 0] == 0.0
    closed = sim.orders["status"] == 3
    # day 2 trimmed the position back to half the value (45 shares), then it delisted
    assert sim.shares[2, 0] == 45.0
    assert sim.orders["value"][closed][0] == pytest.approx(45 * 12.0)
    assert sim.value[3] == pytest.approx(sim.value[2])  # closed at the price it was marked at


def test_a_suspended_name_keeps_its_position_and_its_order_is_recorded_blocked() -> None:
    nan = np.nan
    c = np.array([[10.0, 10.0], [10.0, 10.0], [10.0, 10.0]])
    volume = np.array([[100.0, nan], [0.0, nan], [100.0, nan]])  # name 0 halted on day 1
    market = Market(deal=c, close=c, volume=volume, volume_known=np.array([True, False]))
    sim = simulate_weights(np.array([[0.5, 0.5], [0.5, 0.5], [0.0, 0.0]]), market, FREE)
    # name 1 has no volume in the store at all: its price decides, and it trades
    assert sim.shares[1].tolist() == [0.0, 50.0]
    assert sim.shares[2].tolist() == [50.0, 50.0]  # bought once it traded again
    day1 = sim.orders["day"] == 1
    assert sim.orders["status"][day1].tolist() == [1.0, 0.0]
    assert sim.orders["shares"][day1].tolist() == [50.0, 50.0]  # the blocked buy, sized
    assert sim.orders["value"][day1].tolist() == [0.0, 500.0]
