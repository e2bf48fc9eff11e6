"""What a backtest produced: its figures and frames (``run_backtest`` makes it; the report
and the command read it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from quarry.signals import SignalReport

__all__ = ["BacktestResult"]


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest produced; the optional parts are there when their inputs were.

    ``exposure``: date, industry, portfolio, benchmark, active (portfolio less benchmark),
    each industry's summed weight at the day's close; when the store has industries.
    ``signal``: the signal's IC series and quantile returns against the return it earns
    (the deal price from t+1 to t+2 for a score dated t).
    ``decisions``: date, status, detail for each optimizer rebalance (status ``optimal``, or
    the fallback taken and why); with the optimizer strategy.
    ``notes`` and ``warnings``: one-line texts for the user, also in ``metrics`` (see the
    module); a command prints them.
    """

    metrics: dict[str, Any]
    returns: pl.DataFrame
    positions: pl.DataFrame
    orders: pl.DataFrame
    exposure: pl.DataFrame | None = None
    signal: SignalReport | None = None
    decisions: pl.DataFrame | None = None
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        """A notebook's view: warnings and notes, the metrics net and gross, the trading and
        signal figures, and charts of the cumulative return and drawdown (``_html_view``)."""
        from quarry.backtest._html_view import backtest_html

        return backtest_html(self.metrics, self.returns, warnings=self.warnings, notes=self.notes)
