"""Signal analysis: how well a score ranks the returns that follow it, and how it behaves over
time. Below the models, the portfolio and the backtest, which all measure scores with it.

- Daily IC and Rank IC with their information ratios and t-statistics;
- quantile-group returns and the long-short spread;
- the signal's autocorrelation and turnover; ``analyze`` for all of it at once.
"""

from quarry.signals._analysis import (
    SignalReport,
    analyze,
    autocorrelation,
    daily_ic,
    ic_summary,
    long_short,
    quantile_returns,
    turnover,
)

__all__ = [
    "SignalReport",
    "analyze",
    "autocorrelation",
    "daily_ic",
    "ic_summary",
    "long_short",
    "quantile_returns",
    "turnover",
]
