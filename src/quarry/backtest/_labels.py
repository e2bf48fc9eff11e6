"""What the backtest's figures are called, and how they read, in its report and its
notebook view alike (a module of its own: the report imports the result, whose view would
otherwise import the report)."""

__all__ = ["METRIC_LABELS", "TRADING_LABELS"]

#: metric -> (label, "pct" or "num")
METRIC_LABELS = {
    "annualized_return": ("Annualized return", "pct"),
    "annualized_volatility": ("Annualized volatility", "pct"),
    "sharpe": ("Sharpe", "num"),
    "max_drawdown": ("Max drawdown", "pct"),
    "excess_annualized_return": ("Excess annualized return", "pct"),
    "information_ratio": ("Information ratio", "num"),
    "turnover": ("Average daily turnover", "pct"),
    "calmar": ("Calmar", "num"),
    "hit_rate": ("Hit rate", "pct"),
}

#: what was traded -> label
TRADING_LABELS = {
    "days": "Days of returns",
    "days_without_position": "Days ending without a position",
    "orders_filled": "Orders filled",
    "orders_suspended": "Orders blocked: suspended",
    "orders_limit": "Orders blocked: price limit",
    "orders_delisted": "Holdings closed at delisting",
    "signal_rows": "Signal rows",
    "signal_rows_matched": "Signal rows on the store's market",
    "signal_scores_used": "Scores the strategy read",
}
