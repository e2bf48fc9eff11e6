"""Backtests: a daily simulation of a signal, and the performance of its returns.

- ``simulate``: signal dated t traded at t+1's deal price; costs, minimum cost, lots, cash
  without leverage; no trade on suspensions, no buy at limit-up or sell at limit-down;
  delisted holdings liquidated at their last close (see ``_engine``). ``align`` lays a signal
  and the store's adjusted bars on one grid.

- ``run_backtest``: the whole backtest of a signal over a store (align, simulate a
  strategy, benchmark, exposure, signal analysis) as a ``BacktestResult``, and its files.

- ``load_signal`` reads a signal file (Parquet or CSV) and ``check_signal`` checks any signal
  frame: the one way a backtest's scores come in (see ``_signal``).

- Metrics with empyrical's definitions (252 days a year, a risk-free rate of 0): annualized
  return and volatility, Sharpe, maximum drawdown, Calmar, hit rate, and against a benchmark
  the excess annualized return and the information ratio; ``summary`` gathers them, net and
  gross of costs, in the shape of a backtest's ``metrics.json``.
"""

from typing import TYPE_CHECKING

from quarry._lazy import exports

if TYPE_CHECKING:  # imported on first use (``quarry._lazy``): no engine to read a config
    from quarry.backtest._config import BacktestConfig
    from quarry.backtest._engine import Market, Simulation, simulate
    from quarry.backtest._market import DEAL_PRICES, Aligned, Coverage, align
    from quarry.backtest._metrics import (
        PERIODS_PER_YEAR,
        BacktestMetrics,
        ReturnMetrics,
        annualized_return,
        annualized_volatility,
        calmar,
        excess_annualized_return,
        hit_rate,
        information_ratio,
        max_drawdown,
        sharpe,
        summary,
    )
    from quarry.backtest._result import BacktestResult
    from quarry.backtest._run import STRATEGIES, run_backtest
    from quarry.backtest._signal import SIGNAL_COLUMNS, check_signal, load_signal

# each submodule and the public names it defines
_MODULES = {
    "_config": "BacktestConfig",
    "_engine": "Market Simulation simulate",
    "_market": "DEAL_PRICES Aligned Coverage align",
    "_metrics": "PERIODS_PER_YEAR BacktestMetrics ReturnMetrics annualized_return "
    "annualized_volatility calmar excess_annualized_return hit_rate information_ratio "
    "max_drawdown sharpe summary",
    "_result": "BacktestResult",
    "_run": "STRATEGIES run_backtest",
    "_signal": "SIGNAL_COLUMNS check_signal load_signal",
}

__all__ = [
    "DEAL_PRICES",
    "PERIODS_PER_YEAR",
    "SIGNAL_COLUMNS",
    "STRATEGIES",
    "Aligned",
    "BacktestConfig",
    "BacktestMetrics",
    "BacktestResult",
    "Coverage",
    "Market",
    "ReturnMetrics",
    "Simulation",
    "align",
    "annualized_return",
    "annualized_volatility",
    "calmar",
    "check_signal",
    "excess_annualized_return",
    "hit_rate",
    "information_ratio",
    "load_signal",
    "max_drawdown",
    "run_backtest",
    "sharpe",
    "simulate",
    "summary",
]

if not TYPE_CHECKING:  # type checkers read the imports above, and flag a misspelled name
    __getattr__, __dir__ = exports(__name__, _MODULES)
