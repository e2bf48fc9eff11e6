"""``quarry backtest``: simulate a strategy on a signal over the store's market."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from quarry.cli._output import console, err, fail_cleanly
from quarry.exceptions import DataError


@fail_cleanly
def backtest_cmd(
    signal: Annotated[Path, typer.Option(help="Parquet with instrument, date, score.")],
    out: Annotated[Path, typer.Option(help="Folder for the results and report.html.")],
    store: Annotated[str | None, typer.Option(help="Store with the market (adjusted).")] = None,
    universe: Annotated[
        str | None, typer.Option(help="Trade only members of this universe, day by day.")
    ] = None,
    strategy: Annotated[
        str, typer.Option(help="topk-dropout, long-short (top/bottom 20%) or score-weighted.")
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
    lot_size: Annotated[int, typer.Option(help="Shares are bought in multiples of this.")] = 1,
    account: Annotated[float, typer.Option(help="Starting cash.")] = 1e8,
    as_of: Annotated[str | None, typer.Option(help="Use what the store knew then.")] = None,
) -> None:
    """Backtest a signal: the score dated t trades at t+1, with costs and trading limits.

    Writes OUT/metrics.json (net and gross: annualized return and volatility, Sharpe, max
    drawdown, excess annualized return and information ratio against the equal-weighted
    universe, turnover), returns.parquet, positions.parquet, orders.parquet and report.html.

    Example: quarry backtest --store ./store --signal runs/lgb/predictions.parquet
    --topk 50 --n-drop 5 --out runs/bt
    """
    import polars as pl

    from quarry.backtest import BacktestConfig
    from quarry.backtest._run import run_backtest
    from quarry.data import Store

    config = BacktestConfig(
        account=account, open_cost=open_cost, close_cost=close_cost, min_cost=min_cost,
        limit_threshold=limit_threshold, lot_size=lot_size,
    )  # fmt: skip
    if not signal.exists():
        raise DataError(f"{signal}: no such file; quarry train writes predictions.parquet")
    try:
        frame = pl.read_parquet(signal)
    except pl.exceptions.PolarsError as exc:
        raise DataError(f"{signal}: not a readable Parquet file ({exc})") from exc
    from quarry.settings import quarry_home

    source = Store(store) if store else Store(quarry_home() / "store")
    with err.status("simulating"):
        result = run_backtest(
            source, frame, out, strategy=strategy, topk=topk, n_drop=n_drop,
            hold_thresh=hold_thresh, deal_price=deal_price, universe=universe, as_of=as_of,
            config=config,
        )  # fmt: skip
    m = result.metrics

    def pct(key: str) -> str:
        value = m.get(key)
        return f"{value:.2%}" if isinstance(value, float) and math.isfinite(value) else "n/a"

    console.print(
        f"annualized return {pct('annualized_return')} (gross "
        f"{m['gross']['annualized_return']:.2%}), excess {pct('excess_annualized_return')}, "
        f"max drawdown {pct('max_drawdown')}, turnover {pct('turnover')} a day"
    )
    console.print(f"wrote {out} (report: {out / 'report.html'})")
