"""Rows in a table's key order: checked in one pass, sorted only when they are not."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

__all__ = ["key_order_violations", "sort_by_key"]


def key_order_violations(key: Sequence[str]) -> pl.Expr:
    """True on each row that is not strictly after the previous row in key order."""
    last = pl.col(key[-1])
    expr = last <= last.shift(1)
    for name in reversed(key[:-1]):
        col, prev = pl.col(name), pl.col(name).shift(1)
        expr = (col < prev) | ((col == prev) & expr)
    return expr.fill_null(False)


def sort_by_key(df: pl.DataFrame, key: Sequence[str] = ("instrument", "date")) -> pl.DataFrame:
    """Sort by key unless the rows already are in key order (checked in one pass)."""
    if df.height < 2 or not df.select(key_order_violations(key).any()).item():
        return df
    return df.sort(list(key))
