"""TopK-Dropout against a plain per-day reference written in the shape of Qlib's code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quarry.exceptions import UsageError
from quarry.portfolio import topk_dropout, topk_dropout_day


def reference(
    scores: np.ndarray,
    *,
    topk: int,
    n_drop: int,
    hold_thresh: int,
    can_buy: np.ndarray,
    can_sell: np.ndarray,
) -> list[set[int]]:
    """Qlib's ``TopkDropoutStrategy.generate_trade_decision``, one day at a time, on sets.

    A NaN score is a name missing from ``pred_score``; ties sort stably by instrument number.
    """
    holdings: dict[int, int] = {}  # name -> Qlib's count_day
    out = []
    for t in range(scores.shape[0]):
        pred_score = pd.Series(scores[t]).dropna()
        current_stock_list = sorted(holdings)
        last = pred_score.reindex(current_stock_list).sort_values(ascending=False, kind="stable")
        last = last.index
        today = list(
            pred_score[~pred_score.index.isin(last)]
            .sort_values(ascending=False, kind="stable")
            .index
        )[: n_drop + topk - len(last)]
        comb = pred_score.reindex(last.union(pd.Index(today))).sort_values(
            ascending=False, kind="stable"
        )
        comb = list(comb.index)
        bottom = comb[-n_drop:] if n_drop > 0 else []  # Qlib's [-0:] would be the whole list
        sell = [code for code in last if code in bottom]
        buy = today[: len(sell) + topk - len(last)]

        for code in current_stock_list:
            if not can_sell[t, code]:
                continue
            if code in sell:
                if holdings[code] < hold_thresh:
                    continue
                del holdings[code]
        for code in buy:
            if not can_buy[t, code]:
                continue
            holdings[code] = 0
        for code in holdings:  # Position.add_count_all at the end of the step
            holdings[code] += 1
        out.append(set(holdings))
    return out


def random_case(
    seed: int, days: int = 30, names: int = 25
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 12, size=(days, names)).astype(float)  # many ties
    scores[rng.random((days, names)) < 0.15] = np.nan
    can_buy = rng.random((days, names)) < 0.8
    can_sell = rng.random((days, names)) < 0.8
    return scores, can_buy, can_sell


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(
    ("topk", "n_drop", "hold_thresh"), [(5, 2, 3), (5, 2, 1), (4, 4, 2), (6, 0, 1), (3, 1, 5)]
)
def test_matches_reference_every_day(seed: int, topk: int, n_drop: int, hold_thresh: int) -> None:
    scores, can_buy, can_sell = random_case(seed)
    kw = {"topk": topk, "n_drop": n_drop, "hold_thresh": hold_thresh}
    got = topk_dropout(scores, can_buy=can_buy, can_sell=can_sell, **kw)
    want = reference(scores, can_buy=can_buy, can_sell=can_sell, **kw)
    for t, names in enumerate(want):
        assert set(np.flatnonzero(got[t]).tolist()) == names, f"day {t}"


def test_reference_case_exercises_blocked_trades_and_overfull_books() -> None:
    # The comparison above means something only if the random data reach the hard branches.
    scores, can_buy, can_sell = random_case(0)
    got = topk_dropout(scores, topk=5, n_drop=2, hold_thresh=3, can_buy=can_buy, can_sell=can_sell)
    counts = got.sum(axis=1)
    assert counts.max() > 5 and counts.min() < 5
    assert (got[1:] != got[:-1]).any(axis=1).sum() > 10


def test_first_day_buys_the_top_k() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7, 0.3, 0.8]])
    got = topk_dropout(scores, topk=3, n_drop=1)
    np.testing.assert_array_equal(got[0], [False, True, False, True, False, True])


def test_drops_the_worst_held_for_the_best_not_held() -> None:
    scores = np.array([[6, 5, 4, 3, 2, 1], [6, 5, 0, 3, 4, 1]], dtype=float)
    got = topk_dropout(scores, topk=3, n_drop=1)
    np.testing.assert_array_equal(np.flatnonzero(got[1]), [0, 1, 4])


def test_keeps_a_held_name_that_outscores_the_newcomers() -> None:
    # C is the worst held name but still beats every name not held: nothing trades.
    scores = np.array([[6, 5, 4, 3, 2, 1], [6, 5, 4, 3.5, 2, 1]], dtype=float)
    got = topk_dropout(scores, topk=3, n_drop=1)
    np.testing.assert_array_equal(got[1], got[0])


def test_a_name_at_limit_down_stays_and_later_rebalances_buy_fewer() -> None:
    #                 A  B  C  D  E  F
    scores = np.array(
        [
            [6, 5, 4, 3, 2, 1],  # buy A B C
            [6, 5, 0, 3, 2, 1],  # C to go, D to come; C is at limit-down
            [6, 5, 0, 3, 9, 1],  # C still at limit-down, E now the best name
            [6, 5, 0, 3, 9, 1],  # C can go
        ],
        dtype=float,
    )
    can_sell = np.ones_like(scores, dtype=bool)
    can_sell[1:3, 2] = False
    got = topk_dropout(scores, topk=3, n_drop=1, can_sell=can_sell)
    # Qlib fixes the buys from the planned sells, so D is bought though C stays: four names.
    np.testing.assert_array_equal(np.flatnonzero(got[1]), [0, 1, 2, 3])
    # Overfull, the book buys nothing more while C cannot be sold, even for E ...
    np.testing.assert_array_equal(np.flatnonzero(got[2]), [0, 1, 2, 3])
    # ... and sells C without replacing it once it can.
    np.testing.assert_array_equal(np.flatnonzero(got[3]), [0, 1, 3])


def test_a_name_at_limit_up_is_not_bought_nor_replaced() -> None:
    scores = np.array([[6, 5, 4, 3, 2, 1], [6, 5, 4, 3, 2, 1]], dtype=float)
    can_buy = np.ones_like(scores, dtype=bool)
    can_buy[0, 0] = False
    got = topk_dropout(scores, topk=3, n_drop=1, can_buy=can_buy)
    np.testing.assert_array_equal(np.flatnonzero(got[0]), [1, 2])
    np.testing.assert_array_equal(np.flatnonzero(got[1]), [0, 1, 2])


def test_hold_thresh_keeps_a_freshly_bought_name() -> None:
    scores = np.array([[6, 5, 4, 3, 2, 1], [6, 5, 0, 3, 2, 1], [6, 5, 0, 3, 2, 1]], dtype=float)
    got = topk_dropout(scores, topk=3, n_drop=1, hold_thresh=2)
    np.testing.assert_array_equal(np.flatnonzero(got[1]), [0, 1, 2, 3])  # C held one day
    np.testing.assert_array_equal(np.flatnonzero(got[2]), [0, 1, 3])  # two days: sold
    # With the default threshold C goes at once.
    got = topk_dropout(scores, topk=3, n_drop=1)
    np.testing.assert_array_equal(np.flatnonzero(got[1]), [0, 1, 3])


def test_day_function_reports_orders() -> None:
    scores = np.array([6, 5, 0, 3, 2, 1], dtype=float)
    held = np.array([True, True, True, False, False, False])
    days = np.array([4, 4, 4, 0, 0, 0])
    sell, buy = topk_dropout_day(scores, held, days, topk=3, n_drop=2)
    np.testing.assert_array_equal(np.flatnonzero(sell), [2])  # B outscores E: kept
    np.testing.assert_array_equal(np.flatnonzero(buy), [3])
    sell, buy = topk_dropout_day(scores, held, days, topk=3, n_drop=2, hold_thresh=5)
    assert not sell.any()
    np.testing.assert_array_equal(np.flatnonzero(buy), [3])


def test_nan_scores_are_sold_first_and_never_bought() -> None:
    scores = np.array([np.nan, 5, 4, 3, np.nan, 1])
    held = np.array([True, True, True, False, False, False])
    sell, buy = topk_dropout_day(scores, held, np.ones(6, int), topk=3, n_drop=1)
    np.testing.assert_array_equal(np.flatnonzero(sell), [0])
    np.testing.assert_array_equal(np.flatnonzero(buy), [3])
    first = topk_dropout(np.array([[np.nan, np.nan, 1.0, 2.0]]), topk=3, n_drop=1)
    np.testing.assert_array_equal(first[0], [False, False, True, True])


def test_ties_go_to_the_lower_position() -> None:
    got = topk_dropout(np.array([[1.0, 2.0, 2.0, 2.0, 0.0]]), topk=2, n_drop=1)
    np.testing.assert_array_equal(np.flatnonzero(got[0]), [1, 2])


def test_zero_drop_only_fills_the_book() -> None:
    scores = np.array([[3, 2, 1, 0], [0, 1, 2, 3]], dtype=float)
    can_buy = np.array([[True, False, True, True], [True, True, True, True]])
    got = topk_dropout(scores, topk=2, n_drop=0, can_buy=can_buy)
    np.testing.assert_array_equal(np.flatnonzero(got[0]), [0])
    np.testing.assert_array_equal(np.flatnonzero(got[1]), [0, 3])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"topk": 0, "n_drop": 0}, "topk must be at least 1, got 0"),
        ({"topk": 3, "n_drop": -1}, "n_drop must be 0 or more, got -1"),
        ({"topk": 3, "n_drop": 4}, r"n_drop \(4\) must not exceed topk \(3\)"),
    ],
)
def test_rejects_bad_parameters(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        topk_dropout(np.zeros((2, 4)), **kwargs)
    with pytest.raises(UsageError, match=match):
        topk_dropout_day(np.zeros(4), np.zeros(4, bool), np.zeros(4, int), **kwargs)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(UsageError, match=r"can_buy has shape \(2, 3\) but scores has \(2, 4\)"):
        topk_dropout(np.zeros((2, 4)), topk=1, n_drop=1, can_buy=np.ones((2, 3), bool))
    with pytest.raises(UsageError, match=r"can_sell has shape \(4,\)"):
        topk_dropout(np.zeros((2, 4)), topk=1, n_drop=1, can_sell=np.ones(4, bool))
    with pytest.raises(UsageError, match="2-D"):
        topk_dropout(np.zeros(4), topk=1, n_drop=1)
    with pytest.raises(UsageError, match=r"held has shape \(3,\)"):
        topk_dropout_day(np.zeros(4), np.zeros(3, bool), np.zeros(4, int), topk=1, n_drop=1)
    with pytest.raises(UsageError, match=r"days_held has shape \(5,\)"):
        topk_dropout_day(np.zeros(4), np.zeros(4, bool), np.zeros(5, int), topk=1, n_drop=1)
    with pytest.raises(UsageError, match="1-D"):
        topk_dropout_day(np.zeros((2, 4)), np.zeros(4, bool), np.zeros(4, int), topk=1, n_drop=1)
