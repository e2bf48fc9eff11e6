"""Signal analysis: how well a score ranks the returns that follow it, and how it behaves over
time. Below the models, the portfolio and the backtest, which all measure scores with it.

- Daily IC and Rank IC with their information ratios and t-statistics;
- quantile-group returns and the long-short spread;
- the signal's autocorrelation and turnover;
- ``analyze`` for all of it at once from a long frame, ``analyze_panel`` from dates x
  instruments arrays.
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
from quarry.signals._panel import analyze_panel

__all__ = [
    "SignalReport",
    "analyze",
    "analyze_panel",
    "autocorrelation",
    "daily_ic",
    "ic_summary",
    "long_short",
    "quantile_returns",
    "turnover",
]
