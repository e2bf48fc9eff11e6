"""A backtest from a store and a signal file to the files a researcher reads.

``run_backtest`` aligns the signal with the store's market, simulates the strategy, and
writes returns.parquet (date, return_gross, return_net, benchmark, turnover, value, cash,
costs), positions.parquet, orders.parquet, metrics.json (net and ``gross``) and report.html.
The benchmark is the equal-weighted universe: the mean close-to-close return of the
instruments with a bar on both days.

Which days count: the first signal date only places the first orders (a score dated t
trades at t+1), so it has no return. Every file and every metric starts on the next market
day, the first trading day, and runs to the store's last market day: returns.parquet holds
exactly the days metrics.json is computed from, so empyrical on its ``return_net`` column
gives metrics.json's figures.

What metrics.json says besides the performance, for a caller (the promotion gate) to check:

- ``orders_filled`` (0: the backtest never traded), ``orders_blocked`` (of which
  ``orders_suspended`` and ``orders_limit``), ``orders_delisted``, and ``traded``
  (``orders_filled > 0``);
- ``days``, ``days_without_position`` (days that ended without any holding: they count
  as days of the strategy's return, mostly 0%) and ``days_before_first_position`` (those
  of them before the first holding; a warning names the others);
- ``signal_rows``, ``signal_rows_matched`` (on an instrument and market day of the
  store), ``signal_rows_unknown_instrument``, ``signal_rows_off_calendar``,
  ``signal_scores_used``;
- ``notes`` (what the market lacks and how the backtest decided without it) and
  ``warnings`` (what makes the figures doubtful), each a list of one-line texts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from quarry._json import dumps
from quarry._memory import in_row_blocks
from quarry.backtest._engine import BacktestConfig, Simulation
from quarry.backtest._market import Aligned, Coverage, align, index_returns, industry_codes
from quarry.backtest._metrics import PERIODS_PER_YEAR, summary
from quarry.backtest._result import BacktestResult
from quarry.backtest._topk_engine import simulate_topk
from quarry.data import Store
from quarry.exceptions import DataError, UsageError

if TYPE_CHECKING:  # imported when used: the optimizer (cvxpy) and the signal analysis
    from quarry.portfolio import OptimizerConfig
    from quarry.signals import SignalReport

__all__ = ["STRATEGIES", "BacktestResult", "run_backtest"]

STRATEGIES = ("topk-dropout", "long-short", "score-weighted", "optimizer")
_STATUS = {0: "filled", 1: "suspended", 2: "limit", 3: "delisted"}
# Below this share of a signal's rows on the store's market, the backtest warns: a model's
# own predictions are made on the store's bars and match in full (a live signal running a
# few days past the store's last bar stays far above it), so missing half of them means
# other ids or dates, and a book chosen from half the names is not the signal's book.
MATCH_WARNING = 0.5


def equal_weight_benchmark(close: np.ndarray) -> np.ndarray:
    """The mean close-to-close return of the instruments with a bar on both days."""
    days, width = close.shape
    sums, counts = np.zeros(days), np.zeros(days, dtype=np.int64)

    def block(rows: slice) -> None:  # day t's move, for the days t of ``rows`` from 1 on
        now = slice(max(rows.start, 1), rows.stop)
        if now.start >= now.stop:
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            moves = close[now] / close[now.start - 1 : now.stop - 1] - 1.0
        valid = np.isfinite(moves)
        counts[now] = valid.sum(axis=1)
        sums[now] = np.where(valid, moves, 0.0).sum(axis=1)

    in_row_blocks(block, days, width)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


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
    source: str | None = None,
    report: bool = True,
    png: bool = False,
) -> BacktestResult:
    """Simulate ``strategy`` on ``signal`` (instrument, date, score) over the store's
    market and, with ``out``, write the result files there.

    ``benchmark``: an instrument of the store whose close is an index level; default the
    equal-weighted universe. ``optimizer``: the optimizer strategy's settings; its risk
    model reads the ``lookback`` market days before the first signal date, so the first
    rebalance is the first signal date's. ``analyze_signal``: also measure the signal's IC
    and quantile returns for the report. ``progress``: called with (step, done, total):
    "backtest" over its four stages (market, simulation, analysis, files), "optimizing"
    over the optimizer's rebalances. ``source``: what to call the signal in messages (its
    file); the signal is checked by ``check_signal``. ``report``: write report.html with the
    files (off for batch runs: the data files and metrics.json only, and no chart library
    imported); ``png``: PNGs of its charts beside it too.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"--strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    config = config or BacktestConfig()
    if strategy == "optimizer":
        from quarry.portfolio import OptimizerConfig

        optimizer = optimizer or OptimizerConfig()
    step = progress or (lambda what, done, total: None)
    step("backtest", 0, 4)
    grid = align(
        store, signal, deal_price=deal_price, universe=universe, as_of=as_of,
        history=optimizer.lookback if strategy == "optimizer" and optimizer else 0,
        source=source or "the signal",
    )  # fmt: skip
    scored = np.isfinite(grid.scores).any(axis=0)
    unknown_volume = scored & ~grid.market.known()
    if config.impact > 0 and unknown_volume.any():
        raise UsageError(
            f"--impact {config.impact:g} needs each day's volume, and {store.location} has "
            f"none for {int(unknown_volume.sum()):,} of the {int(scored.sum()):,} instruments "
            "the signal scores; leave --impact out (--slippage needs no volume)"
        )
    # the benchmark first: a wrong name should not wait for the simulation to be refused
    bench = (
        index_returns(store, benchmark, grid.dates, as_of=as_of)
        if benchmark
        else equal_weight_benchmark(grid.market.close)
    )
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
    marks = last_close(grid.market.close)  # the prices holdings are valued at, once
    result = _frames(grid, sim, bench, marks)
    exposure = _exposure(grid, sim, marks, codes, industry_names, equal_weighted=not benchmark)
    analysis = _signal_report(grid) if analyze_signal else None
    if analysis is not None:
        result.metrics["signal"] = analysis.as_dict()
    if decisions is not None:
        result.metrics["optimizer"] = {
            "rebalances": decisions.height,
            **{f"status_{k}": int(v) for k, v in decisions.group_by("status").len().iter_rows()},
        }
    notes, warnings = _notes(grid, result), _warnings(grid, result, source or "the signal")
    result.metrics["notes"] = notes
    result.metrics["warnings"] = warnings
    result = replace(
        result, exposure=exposure, signal=analysis, decisions=decisions, notes=tuple(notes),
        warnings=tuple(warnings),
    )  # fmt: skip
    step("backtest", 3, 4)
    if out is not None:
        write(result, out, report=report, png=png)
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
    # The risk model's window reaches back before the first signal date: the closes of the
    # days before it come first, with no score (and no industry code) on them.
    past = grid.past_close if grid.past_close is not None else grid.market.close[:0]
    h = past.shape[0]
    close = np.concatenate([past, grid.market.close])
    returns = np.full(close.shape, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        returns[1:] = close[1:] / close[:-1] - 1.0
    scores = np.concatenate([np.full(past.shape, np.nan), grid.scores])
    industries = np.concatenate([np.full(past.shape, -1, dtype=codes.dtype), codes])
    found = optimize_weights(
        scores, returns, config=settings,
        industries=industries if (codes >= 0).any() else None,
        progress=(lambda done, total: progress("optimizing", done, total)) if progress else None,
    )  # fmt: skip
    dates = pl.Series("date", grid.dates)
    days = [d - h for d, _, _ in found.decisions]  # no decision before the first score
    decisions = pl.DataFrame(
        {
            "date": dates.gather(days) if days else dates.clear(),
            "status": [s for _, s, _ in found.decisions],
            "detail": [t for _, _, t in found.decisions],
        },
        schema_overrides={"status": pl.String, "detail": pl.String},
    )
    return found.weights[h:], decisions, settings.gross_leverage


def last_close(close: np.ndarray) -> np.ndarray:
    """Each day's close, or the last one before it on a day without a bar (as holdings are
    marked), 0 before the first: a suspended holding keeps its value and weight.

    Day by day: a row of 16,000 closes at a time costs a tenth of the whole-panel version's
    index arrays (2 s at 16,000 x 2,520)."""
    out = np.array(close, dtype=np.float64)
    before = np.zeros(out.shape[1])
    for row in out:
        missing = ~np.isfinite(row)
        if missing.any():
            row[missing] = before[missing]
        before = row
    return out


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
    # the held cells alone: a few dozen a day, where the whole panel is 40M at 16,000 x 2,520
    day, inst = np.nonzero(sim.shares)
    code = codes[day, inst]
    known = code >= 0
    weight = sim.shares[day, inst] * close[day, inst] / sim.value[day]
    portfolio = np.bincount(
        day[known] * k + code[known], weight[known], minlength=days * k
    ).reshape(days, k)
    frame = {
        "date": pl.Series("date", grid.dates).gather(np.repeat(np.arange(days), k)),
        "industry": np.tile(np.asarray(names, dtype=object), days),
        "portfolio": portfolio.ravel(),
    }
    if equal_weighted:
        count = np.zeros((days, k))
        for t, (row, price) in enumerate(zip(codes, grid.market.close, strict=True)):
            listed = row[(row >= 0) & np.isfinite(price)]  # day by day, as ``last_close``
            count[t] = np.bincount(listed, minlength=k) / max(listed.size, 1)
        frame["benchmark"] = count.ravel()
    else:  # an index's members are not in the store: its industry weights are unknown
        frame["benchmark"] = np.full(days * k, np.nan)
    out = pl.DataFrame(frame, schema_overrides={"industry": pl.String})
    return out.slice(k).with_columns(  # from day 1, as the returns (see ``_frames``)
        (pl.col("portfolio") - pl.col("benchmark")).alias("active"),
    )


def _signal_report(grid: Aligned) -> SignalReport | None:
    """The signal's IC and quantile returns against what a score dated t earns when traded:
    the deal price from t+1 to t+2. The cells with both are analyzed, on the days that have
    any, as the grid's dense panels (``analyze_panel``)."""
    from quarry.signals import analyze_panel

    deal, scores = grid.market.deal, grid.scores
    height, width = deal.shape
    mine, earned = np.empty(deal.shape), np.empty(deal.shape)
    has_any = np.zeros(height, dtype=np.bool_)

    def block(rows: slice) -> None:
        earn = np.full((rows.stop - rows.start, width), np.nan)
        live = slice(rows.start, min(rows.stop, height - 2))  # the last two days earn nothing
        if live.start < live.stop:
            with np.errstate(invalid="ignore", divide="ignore"):
                earn[: live.stop - live.start] = (
                    deal[live.start + 2 : live.stop + 2] / deal[live.start + 1 : live.stop + 1]
                    - 1.0
                )
        both = np.isfinite(scores[rows]) & np.isfinite(earn)
        has_any[rows] = both.any(axis=1)
        mine[rows] = np.where(both, scores[rows], np.nan)
        earned[rows] = np.where(both, earn, np.nan)

    in_row_blocks(block, height, width)
    days = np.flatnonzero(has_any)
    if days.size == 0:
        return None
    if days[-1] - days[0] + 1 == days.size:  # a run of days (the usual): views, not copies
        mine, earned = mine[days[0] : days[-1] + 1], earned[days[0] : days[-1] + 1]
    else:
        mine, earned = mine[days], earned[days]
    return analyze_panel(mine, earned, pl.Series("date", grid.dates).gather(days), grid.instruments)


def _frames(
    grid: Aligned, sim: Simulation, benchmark: np.ndarray, marks: np.ndarray
) -> BacktestResult:
    dates = pl.Series("date", grid.dates)
    # Day 0, the first signal date, has no trade and no return (the first signal trades the
    # next day): the files and the metrics start at day 1, the same days in both.
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
    ).slice(1)
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
    periods = periods_per_year(dates)
    metrics: dict[str, Any] = dict(
        summary(returns["return_net"], returns["return_gross"], returns["benchmark"],
                returns["turnover"], periods_per_year=periods)
    )  # fmt: skip
    metrics["periods_per_year"] = periods
    # "days" in the metrics' names count bars of the signal's frequency
    metrics["frequency"] = "daily" if dates.dtype == pl.Date else "intraday"
    status = orders["status"]
    filled = int((status == "filled").sum())
    suspended, limit = int((status == "suspended").sum()), int((status == "limit").sum())
    flat = ~(sim.shares[1:] != 0).any(axis=1)
    metrics |= {
        "days": returns.height,
        "days_without_position": int(flat.sum()),
        "days_before_first_position": int(np.argmin(flat)) if not flat.all() else int(flat.size),
        "orders_filled": filled,
        "orders_blocked": suspended + limit,
        "orders_suspended": suspended,
        "orders_limit": limit,
        "orders_delisted": int((status == "delisted").sum()),
        "traded": filled > 0,
    }
    if grid.coverage is not None:
        metrics |= grid.coverage.as_dict()
    return BacktestResult(metrics, returns, positions, orders)


def periods_per_year(dates: pl.Series) -> float:
    """Returns a year: 252 for daily bars; for intraday bars 252 sessions of the most common
    number of bars a day (a half day or a gap does not shorten the year)."""
    if dates.dtype == pl.Date or dates.len() == 0:
        return float(PERIODS_PER_YEAR)
    per_day = dates.dt.date().value_counts()["count"].mode().max()
    assert isinstance(per_day, int)
    return float(PERIODS_PER_YEAR * per_day)


def _unit(metrics: dict[str, Any]) -> str:
    """What one row of the returns is: a day, or a bar of intraday bars."""
    return "bar" if metrics.get("frequency") == "intraday" else "day"


def _notes(grid: Aligned, result: BacktestResult) -> list[str]:
    """The market's notes, and the days in cash before the first position (a signal
    without scores on its first days, say): they count in the figures."""
    out = list(grid.notes)
    m = result.metrics
    lead = m["days_before_first_position"]
    if m["traded"] and lead:
        first = result.returns["date"][lead]
        unit = _unit(m)
        out.append(
            f"the first position was taken on {first}, {lead:,} {unit}s after the first trading "
            f"{unit}; those {unit}s count in the figures as {unit}s in cash"
        )
    return out


def _warnings(grid: Aligned, result: BacktestResult, source: str) -> list[str]:
    """What makes the figures doubtful, one line each: most of the signal off the store's
    market, no order ever filled, days ending without a position once one was held."""
    out: list[str] = []
    m = result.metrics
    c: Coverage | None = grid.coverage
    if c is not None and c.matched < MATCH_WARNING * c.rows:
        out.append(
            f"{source}: only {c.matched:,} of its {c.rows:,} scores ({c.matched / c.rows:.0%}) "
            f"are on the store's market ({c.unknown_instrument:,} on instruments the store "
            f"lacks over the backtest's days, {c.off_calendar:,} on days without bars); the "
            "rest are not traded"
        )
    if not m["traded"] and m["orders_blocked"]:
        out.append(
            f"no order was filled: {m['orders_blocked']:,} were blocked "
            f"({m['orders_suspended']:,} suspended, {m['orders_limit']:,} at a price limit); "
            "the strategy never held a position and its returns are 0%"
        )
    elif not m["traded"]:
        out.append(
            "no order was filled, and none was blocked: no buy could be paid for (a lot "
            "costing more than the cash) or no name was ever chosen; the strategy never held "
            "a position and its returns are 0%"
        )
    elif m["days_without_position"] > m["days_before_first_position"]:
        lead = m["days_before_first_position"]
        later = m["days_without_position"] - lead
        held = set(result.positions["date"].unique().to_list())
        dates = result.returns["date"].to_list()[lead:]
        first = next(d for d in dates if d not in held)
        unit = _unit(m)
        out.append(
            f"{later:,} of the {m['days'] - lead:,} {unit}s from the first position on ended "
            f"without one (the first on {first}); they count in the return and Sharpe as "
            f"{unit}s in cash"
        )
    return out


def write(result: BacktestResult, out: Path, *, report: bool = True, png: bool = False) -> None:
    """The result's files in ``out``; report.html (and its PNGs) as asked."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        result.returns.write_parquet(out / "returns.parquet")
        result.positions.write_parquet(out / "positions.parquet")
        result.orders.write_parquet(out / "orders.parquet")
        (out / "metrics.json").write_text(dumps(result.metrics))
        from quarry.backtest._report import PNGS, write_report

        # a report or charts of an earlier run in the folder would pass for this one's
        for name in ("report.html", *PNGS) if not report else PNGS if not png else ():
            (out / name).unlink(missing_ok=True)
        if report:
            write_report(result, out / "report.html", png=png)
    except OSError as exc:
        raise DataError(
            f"{out}: cannot write the backtest's files there ({exc.strerror or exc}); "
            "choose another --out folder"
        ) from exc
