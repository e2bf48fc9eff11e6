"""A backtest from a store and a signal file to the files a researcher reads.

``run_backtest`` aligns the signal with the store's market, simulates the strategy, and
writes returns.parquet (date, return_gross, return_net, benchmark, turnover),
positions.parquet, orders.parquet, metrics.json (net and ``gross``) and report.html.
The benchmark is the equal-weighted universe: the mean close-to-close return of the
instruments with a bar on both days.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from quarry.backtest._engine import BacktestConfig, Simulation, simulate
from quarry.backtest._market import Aligned, align
from quarry.backtest._metrics import summary
from quarry.data import Store
from quarry.exceptions import UsageError

if TYPE_CHECKING:  # the models package imports its estimators: only when a signal is analyzed
    from quarry.models._signal import SignalReport

__all__ = ["STRATEGIES", "BacktestResult", "run_backtest"]

STRATEGIES = ("topk-dropout", "long-short", "score-weighted")
_STATUS = {0: "filled", 1: "suspended", 2: "limit", 3: "delisted"}


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest produced; the optional parts are there when their inputs were.

    ``exposure``: date, industry, portfolio, benchmark, active (portfolio less benchmark),
    each industry's summed weight at the day's close; when the store has industries.
    ``signal``: the signal's IC series and quantile returns against the return it earns
    (the deal price from t+1 to t+2 for a score dated t).
    ``decisions``: date, status, detail for each optimizer rebalance (status ``optimal``, or
    the fallback taken and why); with the optimizer strategy.
    """

    metrics: dict[str, Any]
    returns: pl.DataFrame
    positions: pl.DataFrame
    orders: pl.DataFrame
    exposure: pl.DataFrame | None = None
    signal: SignalReport | None = None
    decisions: pl.DataFrame | None = None


def equal_weight_benchmark(close: np.ndarray) -> np.ndarray:
    """The mean close-to-close return of the instruments with a bar on both days."""
    out = np.zeros(close.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        moves = close[1:] / close[:-1] - 1.0
    valid = np.isfinite(moves)
    counts = valid.sum(axis=1)
    sums = np.where(valid, moves, 0.0).sum(axis=1)
    out[1:] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return out


def run_backtest(
    store: Store,
    signal: pl.DataFrame,
    out: Path | None,
    *,
    strategy: str = "topk-dropout",
    topk: int = 50,
    n_drop: int = 5,
    hold_thresh: int = 1,
    deal_price: str = "close",
    universe: str | None = None,
    as_of: datetime | str | None = None,
    config: BacktestConfig | None = None,
) -> BacktestResult:
    """Simulate ``strategy`` on ``signal`` (instrument, date, score) over the store's
    market and, with ``out``, write the result files there."""
    from quarry.portfolio import topk_dropout_day

    if strategy not in STRATEGIES:
        raise UsageError(
            f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)} "
            "(the optimizer is still to come)"
        )
    config = config or BacktestConfig()
    grid = align(store, signal, deal_price=deal_price, universe=universe, as_of=as_of)

    def rule(
        scores: np.ndarray,
        held: np.ndarray,
        days_held: np.ndarray,
        can_buy: np.ndarray,
        can_sell: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        return topk_dropout_day(
            scores, held, days_held, topk=topk, n_drop=n_drop, hold_thresh=hold_thresh,
            can_buy=can_buy, can_sell=can_sell,
        )  # fmt: skip

    if strategy == "topk-dropout":
        sim = simulate(grid.scores, grid.market, rule, config)
    else:
        from quarry.backtest._weights import long_short_weights, score_weights, simulate_weights

        weights = (
            long_short_weights(grid.scores)
            if strategy == "long-short"
            else score_weights(grid.scores)
        )
        sim = simulate_weights(weights * config.risk_degree, grid.market, config)
    result = _frames(grid, sim)
    if out is not None:
        write(result, out)
    return result


def _frames(grid: Aligned, sim: Simulation) -> BacktestResult:
    dates = pl.Series("date", grid.dates)
    benchmark = equal_weight_benchmark(grid.market.close)
    returns = pl.DataFrame(
        {
            "date": dates,
            "return_gross": sim.gross,
            "return_net": sim.net,
            "benchmark": benchmark,
            "turnover": sim.turnover,
            "value": sim.value,
            "cash": sim.cash,
            "costs": sim.costs,
        }
    )
    names = pl.Series("instrument", grid.instruments, dtype=pl.String)
    day, inst = np.nonzero(sim.shares)
    price = np.nan_to_num(grid.market.close[day, inst])
    positions = pl.DataFrame(
        {
            "date": dates.gather(day),
            "instrument": names.gather(inst),
            "shares": sim.shares[day, inst],
            "value": sim.shares[day, inst] * price,
            "weight": sim.shares[day, inst] * price / sim.value[day],  # of the portfolio
        }
    )
    o = sim.orders
    order_days = o["day"].astype(np.int64)
    orders = pl.DataFrame(
        {
            "date": dates.gather(order_days),
            "instrument": names.gather(o["instrument"].astype(np.int64)),
            "side": np.where(o["side"] > 0, "buy", "sell"),
            "shares": o["shares"],
            "price": o["price"],
            "value": o["value"],
            "cost": o["cost"],
            "status": pl.Series(o["status"].astype(np.int64)).replace_strict(
                _STATUS, return_dtype=pl.String
            ),
        },
        schema_overrides={"side": pl.String, "status": pl.String},
    )
    # Day 0 has no trade (the first signal trades the next day): metrics start at day 1.
    metrics = dict(summary(sim.net[1:], sim.gross[1:], benchmark[1:], sim.turnover[1:]))
    return BacktestResult(metrics, returns, positions, orders)


def _clean(value: Any) -> Any:
    """Strict JSON: an undefined or infinite figure becomes null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(result: BacktestResult, out: Path) -> None:
    from quarry.backtest._report import write_report

    out.mkdir(parents=True, exist_ok=True)
    result.returns.write_parquet(out / "returns.parquet")
    result.positions.write_parquet(out / "positions.parquet")
    result.orders.write_parquet(out / "orders.parquet")
    (out / "metrics.json").write_text(json.dumps(_clean(result.metrics), indent=2))
    write_report(result, out / "report.html")
