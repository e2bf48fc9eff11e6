"""A ``DataQuery`` carried out on a store, with the library's own functions (so a read through
the service is the library's read), as an Arrow table."""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa

from quarry.data import DataQuery, Store, read_bars

__all__ = ["run_query"]


def run_query(store: Store, query: DataQuery) -> pa.Table:
    """The rows ``query`` asks for, sorted by instrument and date."""
    instruments = list(query.instruments) or None
    if query.kind == "bars":
        df = read_bars(
            store,
            query.bar_fields(),
            start=query.start,
            end=query.end,
            universe=query.universe,
            as_of=query.as_of,
            adjust=query.adjust,  # type: ignore[arg-type]
            instruments=instruments,
        )
        return df.to_arrow()
    if query.kind == "fundamentals":
        # each field's latest published value on each bar's date, as the library steps it
        df = read_bars(
            store,
            query.fields,
            start=query.start,
            end=query.end,
            as_of=query.as_of,
            instruments=instruments,
        )
        return df.to_arrow()
    return _features(store, query)


def _features(store: Store, query: DataQuery) -> pa.Table:
    """Features through the research engine and its cache, as ``quarry features compute``."""
    import polars as pl

    from quarry.data._times import parse_bound
    from quarry.features import FEATURE_SETS, FeatureCache, materialize
    from quarry.features._tables import read_frame

    if query.feature_set is not None:
        exprs: dict[str, str] = FEATURE_SETS[query.feature_set.lower()]()
    else:
        exprs = {e: e for e in query.exprs}
    start, end = (
        _day(parse_bound(v, what)) for v, what in ((query.start, "start"), (query.end, "end"))
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.arrow"
        materialize(
            store,
            exprs,
            path,
            universe=query.universe,
            as_of=query.as_of,
            start=start,
            end=end,
            cache=FeatureCache(),
            allow_empty=True,
        )
        df = read_frame([path])
    if query.instruments:
        df = df.filter(pl.col("instrument").is_in(list(query.instruments)))
    return df.to_arrow()


def _day(value: date | datetime | None) -> date | None:
    return value.date() if isinstance(value, datetime) else value
