"""The daily simulation on hand-checked cases: timing, limits, delisting, costs, cash."""

from __future__ import annotations

import re

import numpy as np
import pytest

from quarry.backtest._engine import BacktestConfig, Market, simulate
from quarry.exceptions import UsageError


def _buy_positive(scores, held, days_held, can_buy, can_sell):  # type: ignore[no-untyped-def]
    """Buy every name scored above zero, sell every name scored below."""
    s = np.nan_to_num(scores)
    return s < 0, s > 0


FREE = BacktestConfig(account=1000.0, open_cost=0.0, close_cost=0.0, min_cost=0.0,
                      risk_degree=1.0, limit_threshold=0.095)  # fmt: skip


def _market(close: list[list[float]], volume: float = 100.0) -> Market:
    c = np.array(close, dtype=float)
    return Market(deal=c.copy(), close=c, volume=np.where(np.isfinite(c), volume, np.nan))


def test_a_signal_trades_the_next_day_at_that_days_price() -> None:
    market = _market([[10.0], [10.0], [11.0], [12.1]])
    scores = np.array([[1.0], [np.nan], [np.nan], [np.nan]])  # known on day 0
    sim = simulate(scores, market, _buy_positive, FREE)
    assert sim.shares[0, 0] == 0 and sim.shares[1, 0] == 100  # bought on day 1 at 10
    np.testing.assert_allclose(sim.net, [0.0, 0.0, 0.1, 0.1])
    np.testing.assert_allclose(sim.value, [1000.0, 1000.0, 1100.0, 1210.0])


def test_costs_reduce_the_return_by_the_expected_amount() -> None:
    market = _market([[10.0], [10.0], [11.0]])
    scores = np.array([[1.0], [np.nan], [np.nan]])
    config = BacktestConfig(account=1000.0, open_cost=0.01, close_cost=0.0, min_cost=0.0,
                            risk_degree=1.0)  # fmt: skip
    sim = simulate(scores, market, _buy_positive, config)
    # 1000 / (10 * 1.01) = 99.0 shares -> 99 shares cost 990 + 9.9
    assert sim.shares[1, 0] == 99
    assert sim.costs[1] == pytest.approx(9.9)
    assert sim.net[1] == pytest.approx(-9.9 / 1000)
    assert sim.gross[1] == pytest.approx(0.0)
    assert sim.net[2] == pytest.approx(99 * 1.0 / sim.value[1])


def test_minimum_cost_applies_to_a_small_trade() -> None:
    market = _market([[10.0], [10.0]])
    config = BacktestConfig(account=1000.0, open_cost=0.0001, close_cost=0.0, min_cost=5.0,
                            risk_degree=0.5)  # fmt: skip
    sim = simulate(np.array([[1.0], [np.nan]]), market, _buy_positive, config)
    assert sim.costs[1] == pytest.approx(5.0)  # 0.01% of 500 is 0.05, the minimum is 5


def test_limit_up_blocks_a_buy_and_limit_down_a_sell() -> None:
    up = _market([[10.0], [11.0], [11.0]])  # +10% on the trade day
    sim = simulate(np.array([[1.0], [np.nan], [np.nan]]), up, _buy_positive, FREE)
    assert sim.shares[1, 0] == 0
    assert sim.orders["status"].tolist() == [2.0]  # blocked by the limit
    down = _market([[10.0], [10.0], [9.0], [9.0]])
    scores = np.array([[1.0], [-1.0], [np.nan], [np.nan]])  # buy, then sell on the -10% day
    sim = simulate(scores, down, _buy_positive, FREE)
    assert sim.shares[2, 0] == 100  # the sell was blocked: still held


def test_a_suspended_day_blocks_trading() -> None:
    c = np.array([[10.0], [10.0], [10.0]])
    market = Market(deal=c, close=c, volume=np.array([[100.0], [0.0], [100.0]]))
    sim = simulate(np.array([[1.0], [np.nan], [np.nan]]), market, _buy_positive, FREE)
    assert sim.shares[1, 0] == 0 and sim.orders["status"].tolist() == [1.0]


def test_a_delisting_liquidates_at_the_last_close() -> None:
    nan = np.nan
    market = _market([[10.0, 5.0], [10.0, 5.0], [12.0, 5.0], [nan, 5.0], [nan, 5.0]])
    scores = np.array([[1.0, np.nan]] + [[np.nan, np.nan]] * 4)
    config = BacktestConfig(account=1000.0, open_cost=0.0, close_cost=0.0, min_cost=0.0,
                            risk_degree=1.0, delist_return=-0.5)  # fmt: skip
    sim = simulate(scores, market, _buy_positive, config)
    assert sim.shares[2, 0] == 100 and sim.shares[3, 0] == 0
    delisted = sim.orders["status"] == 3
    assert sim.orders["day"][delisted].tolist() == [3.0]
    assert sim.orders["value"][delisted][0] == pytest.approx(100 * 12.0 * 0.5)
    assert sim.value[3] == pytest.approx(600.0)  # cash only, nothing dropped silently
    assert sim.net[3] == pytest.approx(600.0 / 1200.0 - 1)


def test_lots_and_no_leverage() -> None:
    market = _market([[7.0, 3.0], [7.0, 3.0]])
    config = BacktestConfig(account=1000.0, open_cost=0.0, close_cost=0.0, min_cost=0.0,
                            risk_degree=1.0, lot_size=100)  # fmt: skip
    sim = simulate(np.array([[1.0, 1.0], [np.nan, np.nan]]), market, _buy_positive, config)
    # 500 each: 71 shares of the first round down to 0 lots; 166 of the second to 100
    assert sim.shares[1].tolist() == [0.0, 100.0]
    assert sim.cash[1] == pytest.approx(700.0)


def test_topk_dropout_in_the_engine_holds_what_the_rule_alone_holds() -> None:
    """With every order able to fill (no limits, suspensions or costs), the engine's book on
    day t+1 is the rule's book after day t's signal."""
    from quarry.portfolio import topk_dropout, topk_dropout_day

    rng = np.random.default_rng(0)
    days, n = 40, 30
    close = 10 * np.exp(np.cumsum(rng.normal(0, 0.01, (days, n)), axis=0))
    market = Market(deal=close, close=close, volume=np.full((days, n), 1e6))
    scores = rng.normal(size=(days, n))
    scores[rng.random((days, n)) < 0.1] = np.nan

    def rule(s, held, days_held, can_buy, can_sell):  # type: ignore[no-untyped-def]
        return topk_dropout_day(
            s, held, days_held, topk=5, n_drop=2, hold_thresh=2, can_buy=can_buy, can_sell=can_sell
        )

    config = BacktestConfig(account=1e9, open_cost=0.0, close_cost=0.0, min_cost=0.0,
                            limit_threshold=None)  # fmt: skip
    sim = simulate(scores, market, rule, config)
    expected = topk_dropout(scores, topk=5, n_drop=2, hold_thresh=2)
    np.testing.assert_array_equal(sim.shares[1:] > 0, expected[:-1])


def test_slippage_and_impact_cost_their_share_of_the_value() -> None:
    market = _market([[10.0], [10.0], [10.0]], volume=1000.0)
    config = BacktestConfig(account=1000.0, open_cost=0.0, close_cost=0.0, min_cost=0.0,
                            risk_degree=0.5, slippage=0.001, impact=0.2)  # fmt: skip
    sim = simulate(np.array([[1.0], [-1.0], [np.nan]]), market, _buy_positive, config)
    # day 1: 50 shares (500 / 10); participation 50 / 1000 = 5%: 0.1% + 0.2 * 5% = 1.1%
    assert sim.orders["slippage"][0] == pytest.approx(500 * 0.011)
    assert sim.costs[1] == pytest.approx(5.5)
    assert sim.net[1] == pytest.approx(-5.5 / 1000)
    # day 2: the sale pays the same rate on the same value
    assert sim.costs[2] == pytest.approx(5.5)
    assert sim.value[2] == pytest.approx(1000 - 11.0)


def test_a_buy_the_cash_cannot_pay_for_is_cut_to_what_it_can() -> None:
    """Qlib's sizing: the budget over the price, then cut to the cash with the fee."""
    market = _market([[10.0], [10.0]])
    config = BacktestConfig(account=1000.0, open_cost=0.02, close_cost=0.0, min_cost=0.0,
                            risk_degree=1.0)  # fmt: skip
    sim = simulate(np.array([[1.0], [np.nan]]), market, _buy_positive, config)
    # 100 shares would cost 1000 + 20: cut to floor(1000 / 10.2) = 98
    assert sim.shares[1, 0] == 98
    assert sim.cash[1] == pytest.approx(1000 - 980 * 1.02)


def test_missing_volume_suspends_only_where_the_store_has_volume() -> None:
    nan = np.nan
    c = np.array([[10.0, 10.0], [10.0, 10.0], [10.0, 10.0]])
    # name 0: the store has its volume, but not on day 1 (a suspension, as in Qlib's data);
    # name 1: the store has no volume for it at all (closes only): its price decides
    volume = np.array([[100.0, nan], [nan, nan], [100.0, nan]])
    market = Market(deal=c, close=c, volume=volume, volume_known=np.array([True, False]))
    scores = np.array([[1.0, 1.0], [nan, nan], [nan, nan]])
    sim = simulate(scores, market, _buy_positive, FREE)
    assert sim.shares[1].tolist() == [0.0, 50.0]  # half the cash each, name 0 blocked
    orders = sorted(zip(sim.orders["instrument"], sim.orders["status"], strict=True))
    assert orders == [(0.0, 1.0), (1.0, 0.0)]
    # without volume_known every volume is taken as known: both are suspended on day 1
    both = simulate(scores, Market(deal=c, close=c, volume=volume), _buy_positive, FREE)
    assert both.shares[1].tolist() == [0.0, 0.0]
    assert both.orders["status"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"open_cost": float("nan")}, "--open-cost nan: give a finite number"),
        ({"account": float("inf")}, "--account inf: give a finite number"),
        ({"limit_threshold": 0.0}, "--limit-threshold 0.0: give a positive daily move"),
        ({"limit_threshold": -0.1}, "--limit-threshold -0.1: give a positive daily move"),
        ({"delist_return": -1.5}, "cannot lose more than all of its value"),
    ],
)
def test_settings_the_engine_cannot_simulate_are_refused(
    setting: dict[str, float], message: str
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        BacktestConfig(**setting)
    BacktestConfig(limit_threshold=None, delist_return=-1.0)  # no limits; a total loss
