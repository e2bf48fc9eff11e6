"""The workflow's backtest section run on a signal: the same settings for the backtest step
and for both sides of the promotion gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from quarry.workflows._spec import CONFIG_FIELDS, Workflow

__all__ = ["backtest"]


def backtest(
    spec: Workflow,
    store: Any,
    predictions: pl.DataFrame,
    out: Path | None,
    source: str = "the model's predictions",
) -> Any:
    """``run_backtest`` of ``predictions`` with the workflow's strategy, costs, universe and
    as-of; the files go to ``out`` (none when None)."""
    from quarry.backtest import BacktestConfig, run_backtest
    from quarry.portfolio import OptimizerConfig

    b = spec.backtest
    # the section's engine settings are BacktestConfig's own fields, by name
    config = BacktestConfig(**{name: getattr(b, name) for name in CONFIG_FIELDS})
    optimizer = (b.optimizer or OptimizerConfig()) if b.strategy == "optimizer" else None
    return run_backtest(
        store, predictions, out, strategy=b.strategy, topk=b.topk, n_drop=b.n_drop,
        hold_thresh=b.hold_thresh, deal_price=b.deal_price, universe=spec.data.universe,
        benchmark=b.benchmark, as_of=spec.data.as_of, config=config, optimizer=optimizer,
        source=source,
    )  # fmt: skip
