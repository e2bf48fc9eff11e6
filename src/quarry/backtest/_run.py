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
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from quarry.backtest._engine import BacktestConfig, Simulation
from quarry.backtest._market import Aligned, align, index_returns, industry_codes
from quarry.backtest._metrics import summary
from quarry.backtest._topk_engine import simulate_topk
from quarry.data import Store
from quarry.exceptions import UsageError

if TYPE_CHECKING:  # the models package imports its estimators: only when a signal is analyzed
    from quarry.models._signal import SignalReport
    from quarry.portfolio import OptimizerConfig

__all__ = ["STRATEGIES", "BacktestResult", "run_backtest", "strict_json"]

STRATEGIES = ("topk-dropout", "long-short", "score-weighted", "optimizer")
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
    benchmark: str | None = None,
    as_of: datetime | str | None = None,
    config: BacktestConfig | None = None,
    optimizer: OptimizerConfig | None = None,
    analyze_signal: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
) -> BacktestResult:
    """Simulate ``strategy`` on ``signal`` (instrument, date, score) over the store's
    market and, with ``out``, write the result files there.

    ``benchmark``: an instrument of the store whose close is an index level; default the
    equal-weighted universe. ``optimizer``: the optimizer strategy's settings.
    ``analyze_signal``: also measure the signal's IC and quantile returns for the report.
    ``progress``: called with (step, done, total): "backtest" over its four stages (market,
    simulation, analysis, files), "optimizing" over the optimizer's rebalances.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    config = config or BacktestConfig()
    step = progress or (lambda what, done, total: None)
    step("backtest", 0, 4)
    grid = align(store, signal, deal_price=deal_price, universe=universe, as_of=as_of)
    step("backtest", 1, 4)
    codes, industry_names = industry_codes(store, grid, as_of=as_of)
    decisions = None
    if strategy == "topk-dropout":
        sim = simulate_topk(
            grid.scores, grid.market, config, topk=topk, n_drop=n_drop, hold_thresh=hold_thresh
        )
    else:
        from quarry.backtest._weights import long_short_weights, score_weights, simulate_weights

        leverage = 1.0
        if strategy == "long-short":
            weights = long_short_weights(grid.scores)
        elif strategy == "score-weighted":
            weights = score_weights(grid.scores)
        else:
            weights, decisions, leverage = _optimize(grid, codes, optimizer, progress)
        sim = simulate_weights(
            weights * config.risk_degree, grid.market, config, leverage=max(leverage, 1.0)
        )
    step("backtest", 2, 4)
    bench = (
        index_returns(store, benchmark, grid.dates, as_of=as_of)
        if benchmark
        else equal_weight_benchmark(grid.market.close)
    )
    marks = last_close(grid.market.close)  # the prices holdings are valued at, once
    result = _frames(grid, sim, bench, marks)
    exposure = _exposure(grid, sim, marks, codes, industry_names, equal_weighted=not benchmark)
    report = _signal_report(grid) if analyze_signal else None
    if report is not None:
        result.metrics["signal"] = report.as_dict()
    if decisions is not None:
        result.metrics["optimizer"] = {
            "rebalances": decisions.height,
            **{f"status_{k}": int(v) for k, v in decisions.group_by("status").len().iter_rows()},
        }
    result = replace(result, exposure=exposure, signal=report, decisions=decisions)
    step("backtest", 3, 4)
    if out is not None:
        write(result, out)
    step("backtest", 4, 4)
    return result


def _optimize(
    grid: Aligned,
    codes: np.ndarray,
    settings: OptimizerConfig | None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[np.ndarray, pl.DataFrame, float]:
    """Target weights from the optimizer, point in time: day t's weights use day t's scores
    and the close-to-close returns up to day t."""
    from quarry.portfolio import OptimizerConfig, optimize_weights

    settings = settings or OptimizerConfig()
    close = grid.market.close
    returns = np.full(close.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        returns[1:] = close[1:] / close[:-1] - 1.0
    found = optimize_weights(
        grid.scores, returns, config=settings,
        industries=codes if (codes >= 0).any() else None,
        progress=(lambda done, total: progress("optimizing", done, total)) if progress else None,
    )  # fmt: skip
    dates = pl.Series("date", grid.dates)
    days = [d for d, _, _ in found.decisions]
    decisions = pl.DataFrame(
        {
            "date": dates.gather(days) if days else dates.clear(),
            "status": [s for _, s, _ in found.decisions],
            "detail": [t for _, _, t in found.decisions],
        },
        schema_overrides={"status": pl.String, "detail": pl.String},
    )
    return found.weights, decisions, settings.gross_leverage


def last_close(close: np.ndarray) -> np.ndarray:
    """Each day's close, or the last one before it on a day without a bar (as holdings are
    marked), 0 before the first: a suspended holding keeps its value and weight."""
    days = np.arange(close.shape[0])[:, None]
    seen = np.maximum.accumulate(np.where(np.isfinite(close), days, -1), axis=0)
    out = close[np.maximum(seen, 0), np.arange(close.shape[1])]
    return np.where(seen >= 0, out, 0.0)


def _exposure(
    grid: Aligned,
    sim: Simulation,
    close: np.ndarray,
    codes: np.ndarray,
    names: list[str],
    *,
    equal_weighted: bool,
) -> pl.DataFrame | None:
    """Each industry's weight in the portfolio at each close, and in the equal-weighted
    universe (the instruments with a bar that day) when that is the benchmark."""
    if not names:
        return None
    days, k = codes.shape[0], len(names)
    held = sim.shares != 0
    weight = np.where(held, sim.shares * close, 0.0) / sim.value[:, None]
    flat = np.arange(days)[:, None] * k + codes
    known = codes >= 0
    portfolio = np.bincount(flat[known], weight[known], minlength=days * k).reshape(days, k)
    frame = {
        "date": np.repeat(np.asarray(grid.dates, dtype="datetime64[D]"), k),
        "industry": np.tile(np.asarray(names, dtype=object), days),
        "portfolio": portfolio.ravel(),
    }
    if equal_weighted:
        listed = known & np.isfinite(grid.market.close)
        count = np.bincount(flat[listed], minlength=days * k).reshape(days, k)
        total = np.maximum(listed.sum(axis=1, keepdims=True), 1)
        frame["benchmark"] = (count / total).ravel()
    else:  # an index's members are not in the store: its industry weights are unknown
        frame["benchmark"] = np.full(days * k, np.nan)
    out = pl.DataFrame(frame, schema_overrides={"industry": pl.String})
    return out.with_columns(
        pl.col("date").cast(pl.Date),
        (pl.col("portfolio") - pl.col("benchmark")).alias("active"),
    )


def _signal_report(grid: Aligned) -> SignalReport | None:
    """The signal's IC and quantile returns against what a score dated t earns when traded:
    the deal price from t+1 to t+2."""
    from quarry.models._signal import analyze

    deal = grid.market.deal
    earned = np.full(deal.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        earned[:-2] = deal[2:] / deal[1:-1] - 1.0
    day, inst = np.nonzero(np.isfinite(grid.scores) & np.isfinite(earned))
    if day.size == 0:
        return None
    dates = pl.Series("date", grid.dates)
    frame = pl.DataFrame(
        {
            "instrument": pl.Series(grid.instruments, dtype=pl.String).gather(inst),
            "date": dates.gather(day),
            "score": grid.scores[day, inst],
            "LABEL0": earned[day, inst],
        }
    )
    return analyze(frame)


def _frames(
    grid: Aligned, sim: Simulation, benchmark: np.ndarray, marks: np.ndarray
) -> BacktestResult:
    dates = pl.Series("date", grid.dates)
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
    price = marks[day, inst]
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
            "slippage": o["slippage"],
            "status": pl.Series(o["status"].astype(np.int64)).replace_strict(
                _STATUS, return_dtype=pl.String
            ),
        },
        schema_overrides={"side": pl.String, "status": pl.String},
    ).sort("date", "instrument", maintain_order=True)
    # Day 0 has no trade (the first signal trades the next day): metrics start at day 1.
    metrics = dict(summary(sim.net[1:], sim.gross[1:], benchmark[1:], sim.turnover[1:]))
    return BacktestResult(metrics, returns, positions, orders)


def strict_json(value: Any) -> Any:
    """Strict JSON: an undefined or infinite figure becomes null."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write(result: BacktestResult, out: Path) -> None:
    from quarry.backtest._report import write_report

    out.mkdir(parents=True, exist_ok=True)
    result.returns.write_parquet(out / "returns.parquet")
    result.positions.write_parquet(out / "positions.parquet")
    result.orders.write_parquet(out / "orders.parquet")
    (out / "metrics.json").write_text(json.dumps(strict_json(result.metrics), indent=2))
    write_report(result, out / "report.html")
