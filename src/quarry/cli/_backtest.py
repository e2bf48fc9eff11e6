"""``quarry backtest``: simulate a strategy on a signal over the store's market."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from quarry.cli._output import console, fail_cleanly, note, print_json, progress_bar, warn
from quarry.exceptions import UsageError


@fail_cleanly
def backtest_cmd(
    signal: Annotated[
        Path,
        typer.Option(help="Parquet (or .csv) with instrument, date (YYYY-MM-DD), score."),
    ],
    out: Annotated[Path, typer.Option(help="Folder for the results and report.html.")],
    store: Annotated[str | None, typer.Option(help="Store with the market (adjusted).")] = None,
    universe: Annotated[
        str | None, typer.Option(help="Trade only members of this universe, day by day.")
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(
            help="topk-dropout, long-short (top/bottom 20%), score-weighted, or optimizer "
            "(alpha less risk under limits, see the --risk-aversion group below)."
        ),
    ] = "topk-dropout",
    topk: Annotated[int, typer.Option(help="Names held.")] = 50,
    n_drop: Annotated[int, typer.Option(help="Worst held names replaced each day.")] = 5,
    hold_thresh: Annotated[int, typer.Option(help="Days a name is held at least.")] = 1,
    deal_price: Annotated[str, typer.Option(help="open, close or vwap of the trade day.")] = (
        "close"
    ),
    open_cost: Annotated[float, typer.Option(help="Cost of a buy, share of its value.")] = 0.0005,
    close_cost: Annotated[float, typer.Option(help="Cost of a sell, share of its value.")] = (
        0.0015
    ),
    min_cost: Annotated[float, typer.Option(help="Minimum cost of a trade.")] = 5.0,
    limit_threshold: Annotated[
        float, typer.Option(help="Daily move beyond which buys (up) or sells (down) are blocked.")
    ] = 0.095,
    slippage: Annotated[
        float, typer.Option(help="Slippage, share of each trade's value (0.0005 = 5 bp).")
    ] = 0.0,
    impact: Annotated[
        float,
        typer.Option(help="More slippage per unit of participation (shares / day's volume)."),
    ] = 0.0,
    lot_size: Annotated[int, typer.Option(help="Shares are bought in multiples of this.")] = 1,
    delist_return: Annotated[
        float, typer.Option(help="Return on the last close when a holding delists.")
    ] = 0.0,
    account: Annotated[float, typer.Option(help="Starting cash.")] = 1e8,
    benchmark: Annotated[
        str | None,
        typer.Option(
            help="An instrument of the store whose close is an index level; default the "
            "equal-weighted universe."
        ),
    ] = None,
    as_of: Annotated[str | None, typer.Option(help="Use what the store knew then.")] = None,
    risk_aversion: Annotated[
        float | None, typer.Option(help="Optimizer: weight of risk against alpha.")
    ] = None,
    dollar_neutral: Annotated[
        bool, typer.Option(help="Optimizer: long-short with net weight 0 (default long-only).")
    ] = False,
    max_weight: Annotated[
        float | None, typer.Option(help="Optimizer: largest weight of a name.")
    ] = None,
    industry_bound: Annotated[
        float | None,
        typer.Option(help="Optimizer: industry weight within this of the benchmark's."),
    ] = 0.05,
    turnover_limit: Annotated[
        float | None, typer.Option(help="Optimizer: most traded weight per rebalance.")
    ] = None,
    gross_leverage: Annotated[
        float | None,
        typer.Option(help="Optimizer: long-only share invested, or most gross weight."),
    ] = None,
    risk_model: Annotated[
        str | None, typer.Option(help="Optimizer: ledoit-wolf or factor (statistical, PCA).")
    ] = None,
    lookback: Annotated[
        int | None, typer.Option(help="Optimizer: trailing days the risk model is fitted on.")
    ] = None,
    rebalance_every: Annotated[
        int | None, typer.Option(help="Optimizer: trading days between rebalances.")
    ] = None,
    solver: Annotated[str | None, typer.Option(help="Optimizer: clarabel or osqp.")] = None,
    report: Annotated[
        bool,
        typer.Option(
            help="Write report.html. --no-report for batch runs: the data files and "
            "metrics.json only, sooner."
        ),
    ] = True,
    png: Annotated[
        bool, typer.Option("--png", help="Also write PNGs of the report's charts beside it.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print metrics.json's figures (and out) as JSON.")
    ] = False,
) -> None:
    """Backtest a signal: the score dated t trades at t+1, with costs and trading limits.

    Writes OUT/metrics.json (net and gross: annualized return and volatility, Sharpe, max
    drawdown, excess annualized return and information ratio against the benchmark, turnover;
    orders filled and blocked, days without a position, signal rows matched; the signal's IC),
    returns.parquet, positions.parquet, orders.parquet (fills, costs, slippage, blocked
    orders) and report.html (with --png, PNGs of its charts too; with --no-report, no
    report). returns.parquet has one row per day the
    metrics count: from the first trading day (the day after the first signal date) on.

    Examples:

      quarry backtest --store ./store --signal runs/lgb/predictions.parquet --out runs/bt

      quarry backtest --store ./store --signal preds.parquet --strategy optimizer
      --max-weight 0.03 --industry-bound 0.02 --turnover-limit 0.2 --out runs/opt
    """
    if png and not report:
        raise UsageError("--png draws the report's charts: leave out --no-report, or --png")
    from quarry.backtest import BacktestConfig, load_signal, run_backtest
    from quarry.data import Store
    from quarry.portfolio import OptimizerConfig

    config = BacktestConfig(
        account=account, open_cost=open_cost, close_cost=close_cost, min_cost=min_cost,
        limit_threshold=limit_threshold, lot_size=lot_size, slippage=slippage, impact=impact,
        delist_return=delist_return,
    )  # fmt: skip
    # An option not given is the optimizer's own default (OptimizerConfig states each once).
    given: dict[str, Any] = {"risk_aversion": risk_aversion, "max_weight": max_weight,
             "gross_leverage": gross_leverage, "risk_model": risk_model, "lookback": lookback,
             "rebalance_every": rebalance_every, "solver": solver}  # fmt: skip
    optimizer = (
        OptimizerConfig(
            long_only=not dollar_neutral,
            industry_bound=industry_bound,
            turnover_limit=turnover_limit,
            **{k: v for k, v in given.items() if v is not None},
        )
        if strategy == "optimizer"
        else None
    )
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: a file, not a folder; give a folder for the results")
    frame = load_signal(signal)
    from quarry.settings import default_store

    source = Store(store or default_store())
    with progress_bar() as update:
        result = run_backtest(
            source, frame, out, strategy=strategy, topk=topk, n_drop=n_drop,
            hold_thresh=hold_thresh, deal_price=deal_price, universe=universe,
            benchmark=benchmark, as_of=as_of, config=config, optimizer=optimizer,
            progress=update, source=str(signal), report=report, png=png,
        )  # fmt: skip
    m = result.metrics
    for message in result.notes:
        note(message)
    for message in result.warnings:
        warn(message)
    shown = str(out / "report.html") if report else None
    if as_json:
        print_json({"out": str(out), "report": shown, "metrics": m})
        return

    def pct(key: str) -> str:
        value = m.get(key)
        return f"{value:.2%}" if isinstance(value, float) and math.isfinite(value) else "n/a"

    console.print(
        f"annualized return {pct('annualized_return')} (gross "
        f"{m['gross']['annualized_return']:.2%}), excess {pct('excess_annualized_return')}, "
        f"max drawdown {pct('max_drawdown')}, turnover {pct('turnover')} a "
        + ("bar" if m.get("frequency") == "intraday" else "day")
    )
    console.print(f"wrote {out}" + (f" (report: {shown})" if shown else " (no report)"))
