"""TopK-Dropout, Qlib's rule, on numpy masks over the instrument axis.

The rule is Qlib's ``TopkDropoutStrategy.generate_trade_decision``
(``qlib/contrib/strategy/signal_strategy.py``, read in microsoft/qlib at commit ``a79d1a1c`` and
in a later copy of the file that adds ``forbid_all_trade_at_limit``) with its defaults
``method_sell="bottom"``, ``method_buy="top"``, ``only_tradable=False``. Every list Qlib sorts
(``last``, ``today``, ``comb``) is a subsequence of one descending order of the day's scores, so
one stable ``argsort`` per day gives them all, and each step is a cumulative count along it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quarry.exceptions import UsageError

__all__ = ["check_topk_params", "topk_dropout", "topk_dropout_day"]

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def check_topk_params(topk: int, n_drop: int, hold_thresh: int = 1) -> None:
    """TopK-Dropout's settings, checked: by the rule itself and by the workflow file."""
    if topk < 1:
        raise UsageError(f"topk must be at least 1, got {topk}; pass the number of names to hold")
    if n_drop < 0:
        raise UsageError(f"n_drop must be 0 or more, got {n_drop}")
    if n_drop > topk:
        raise UsageError(
            f"n_drop ({n_drop}) must not exceed topk ({topk}); one rebalance can replace at most "
            "the whole book"
        )
    if hold_thresh < 1:
        raise UsageError(f"hold_thresh must be at least 1 day, got {hold_thresh}")


def _mask(
    value: npt.ArrayLike | None, name: str, shape: tuple[int, ...], axes: str
) -> BoolArray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.bool_)
    if arr.shape != shape:
        raise UsageError(f"{name} has shape {arr.shape} but scores has {shape}; pass one {axes}")
    return arr


def topk_dropout_day(
    scores: npt.ArrayLike,
    held: npt.ArrayLike,
    days_held: npt.ArrayLike,
    *,
    topk: int,
    n_drop: int,
    hold_thresh: int = 1,
    can_buy: npt.ArrayLike | None = None,
    can_sell: npt.ArrayLike | None = None,
) -> tuple[BoolArray, BoolArray]:
    """One TopK-Dropout rebalance: which held names to sell and which new names to buy.

    Follows Qlib's ``TopkDropoutStrategy.generate_trade_decision``
    (``qlib/contrib/strategy/signal_strategy.py``) with ``method_sell="bottom"``,
    ``method_buy="top"`` and ``only_tradable=False``. "Ranked" below means by score, highest
    first, a missing score last, ties to the lower instrument position.

    1. ``last``: the held names, ranked (``pred_score.reindex(held).sort_values``).
    2. ``today``: the first ``n_drop + topk - len(last)`` names not held, ranked.
    3. ``comb``: ``last`` and ``today`` together, ranked.
    4. ``sell``: the held names among the last ``n_drop`` of ``comb``, so a held name is never
       dropped for a worse-scored newcomer.
    5. ``buy``: the first ``len(sell) + topk - len(last)`` of ``today``.
    6. A name in ``sell`` is sold only if ``can_sell`` and held for ``hold_thresh`` days or more;
       a name in ``buy`` is bought only if ``can_buy``. Neither is replaced when blocked.

    Step 6 is Qlib's too: the number to buy is fixed in step 5 from the planned sells, so a sell
    blocked by a limit, a suspension or ``hold_thresh`` still lets its replacement be bought and
    the book holds more than ``topk`` names until a later rebalance, which then buys fewer
    (microsoft/qlib#809; the fix in #2223 is not merged).

    Parameters
    ----------
    scores : array of float, shape (n,)
        The signal; NaN where an instrument has no score.
    held : array of bool, shape (n,)
        The names held before this rebalance.
    days_held : array of int, shape (n,)
        Trading days each held name has been held, counting the day it was bought (Qlib's
        ``Position.get_stock_count``: 1 on the day after a purchase).
    topk : int
        Names to hold.
    n_drop : int
        Most held names replaced per rebalance, ``0 <= n_drop <= topk``.
    hold_thresh : int, default 1
        A held name is sold only once ``days_held >= hold_thresh``.
    can_buy, can_sell : array of bool, shape (n,), optional
        Whether a buy (a sell) can trade today; default all True. For the issue's rule pass
        ``can_buy = ~suspended & ~limit_up`` and ``can_sell = ~suspended & ~limit_down``, which is
        Qlib with ``forbid_all_trade_at_limit=False``; Qlib's default (``True``) blocks both sides
        at either limit, which is ``can_buy = can_sell = ~suspended & ~limit_up & ~limit_down``.

    Returns
    -------
    sell, buy : array of bool, shape (n,)
        The orders to place; ``sell`` is a subset of ``held``, ``buy`` disjoint from it.

    Notes
    -----
    Deviations from Qlib, each where Qlib's behaviour is accidental:

    - A NaN score stands for a name absent from Qlib's ``pred_score``: ranked below every scored
      name when held (Qlib's ``reindex`` gives it NaN, which sorts last, so it is sold first) and
      never bought. Qlib would buy a NaN-scored name that is present in ``pred_score`` once the
      scored candidates run out; Quarry does not buy what it cannot score.
    - Ties: Qlib sorts with pandas' default (unstable) quicksort, over holdings in the order they
      were bought, so its tie order is unspecified; here ties go to the lower position.
    - ``n_drop=0`` sells nothing. Qlib's ``list(comb)[-0:]`` is the whole list, so it would
      plan to sell every held name.

    ``only_tradable=True`` and the ``random`` methods are not implemented.

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.array([0.9, 0.1, 0.5, 0.7])
    >>> held = np.array([True, True, False, False])
    >>> sell, buy = topk_dropout_day(scores, held, np.ones(4, int), topk=2, n_drop=1)
    >>> sell.nonzero()[0].tolist(), buy.nonzero()[0].tolist()
    ([1], [3])
    """
    check_topk_params(topk, n_drop, hold_thresh)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise UsageError(f"scores must be one day, a 1-D array; got shape {s.shape}")
    h = _mask(held, "held", s.shape, "flag per instrument")
    d = np.asarray(days_held, dtype=np.int64)
    if d.shape != s.shape:
        raise UsageError(
            f"days_held has shape {d.shape} but scores has {s.shape}; pass one count per instrument"
        )
    cb = _mask(can_buy, "can_buy", s.shape, "flag per instrument")
    cs = _mask(can_sell, "can_sell", s.shape, "flag per instrument")
    assert h is not None
    return _day(s, h, d, topk, n_drop, hold_thresh, cb, cs)


def _day(
    s: FloatArray,
    held: BoolArray,
    days_held: IntArray,
    topk: int,
    n_drop: int,
    hold_thresh: int,
    can_buy: BoolArray | None,
    can_sell: BoolArray | None,
) -> tuple[BoolArray, BoolArray]:
    # numpy sorts NaN last, and a stable sort of -s keeps ties in position order.
    order = np.argsort(-s, kind="stable")
    held_o = held[order]
    n_last = int(held_o.sum())

    # today: the first n_want scored names not held
    n_want = max(n_drop + topk - n_last, 0)
    cand_o = ~held_o & ~np.isnan(s[order])
    today_o = cand_o & (np.cumsum(cand_o) <= n_want)

    # sell: held names among the last n_drop of comb = last | today
    if n_drop and len(s):
        comb_rank = np.cumsum(held_o | today_o)  # 1-based rank within comb, read where held
        sell_o = held_o & (comb_rank > comb_rank[-1] - n_drop)
    else:
        sell_o = np.zeros_like(held_o)

    # buy: the first len(sell) + topk - len(last) of today
    n_buy = int(sell_o.sum()) + topk - n_last
    buy_o = today_o & (np.cumsum(today_o) <= n_buy)

    sell = np.zeros_like(held)
    buy = np.zeros_like(held)
    sell[order] = sell_o
    buy[order] = buy_o
    sell &= days_held >= hold_thresh
    if can_sell is not None:
        sell &= can_sell
    if can_buy is not None:
        buy &= can_buy
    return sell, buy


def topk_dropout(
    scores: npt.ArrayLike,
    *,
    topk: int,
    n_drop: int,
    hold_thresh: int = 1,
    can_buy: npt.ArrayLike | None = None,
    can_sell: npt.ArrayLike | None = None,
) -> BoolArray:
    """Run TopK-Dropout over days, every allowed order filling.

    Starts from an empty book and applies ``topk_dropout_day`` to each day's scores in turn; a
    name's ``days_held`` counts the days it has been held after trading, as Qlib's
    ``Position.add_count_all`` does at the end of each step.

    Parameters
    ----------
    scores : array of float, shape (days, instruments)
        The signal per day; NaN where an instrument has no score.
    topk, n_drop, hold_thresh :
        As for ``topk_dropout_day``.
    can_buy, can_sell : array of bool, shape (days, instruments), optional
        Whether a buy (a sell) of the instrument can trade that day; default all True.

    Returns
    -------
    array of bool, shape (days, instruments)
        The names held after day t's trades on day t's signal. The caller executes them a day
        later, as Qlib trades on the previous step's prediction.

    Examples
    --------
    >>> import numpy as np
    >>> scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 2.0, 1.0, 3.0]])
    >>> topk_dropout(scores, topk=2, n_drop=1).astype(int).tolist()
    [[1, 1, 0, 0], [0, 1, 0, 1]]
    """
    check_topk_params(topk, n_drop, hold_thresh)
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise UsageError(f"scores must be days x instruments, a 2-D array; got shape {s.shape}")
    cb = _mask(can_buy, "can_buy", s.shape, "flag per day and instrument")
    cs = _mask(can_sell, "can_sell", s.shape, "flag per day and instrument")

    n_days, n = s.shape
    out = np.zeros((n_days, n), dtype=np.bool_)
    held = np.zeros(n, dtype=np.bool_)
    days_held = np.zeros(n, dtype=np.int64)
    for t in range(n_days):
        sell, buy = topk_dropout_day(
            s[t],
            held,
            days_held,
            topk=topk,
            n_drop=n_drop,
            hold_thresh=hold_thresh,
            can_buy=None if cb is None else cb[t],
            can_sell=None if cs is None else cs[t],
        )
        held = (held & ~sell) | buy
        days_held = np.where(held, days_held + 1, 0)
        out[t] = held
    return out
