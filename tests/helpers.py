"""Builders shared by test modules of several folders (fixtures live in conftest.py)."""

from __future__ import annotations

import polars as pl


def bars_frame(rows: list[tuple[str, str, float]]) -> pl.DataFrame:
    """Bars from (instrument, date, close) with open = close, a 1% range and volume 1000."""
    return pl.DataFrame(
        {
            "instrument": [r[0] for r in rows],
            "date": [r[1] for r in rows],
            "open": [r[2] for r in rows],
            "high": [r[2] * 1.01 for r in rows],
            "low": [r[2] * 0.99 for r in rows],
            "close": [r[2] for r in rows],
            "volume": [1000.0] * len(rows),
        }
    ).with_columns(pl.col("date").str.to_date())
