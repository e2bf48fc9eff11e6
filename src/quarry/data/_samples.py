"""Real sample data that ships inside installed packages, so nothing is downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from quarry.exceptions import UsageError

if TYPE_CHECKING:  # the names alone are read by `quarry data sample --help`: nothing heavy
    from quarry.data._store import Store

__all__ = ["SAMPLES", "SampleSummary", "load_sample"]

SAMPLES = {
    "sp500": (
        "Daily prices of 20 S&P 500 stocks, 1990-2022, shipped by skfolio. CLOSES ONLY: the "
        "source has one (dividend- and split-adjusted) price per day, so open, high, low and "
        "volume are empty and factor is 1. The 20 names are today's survivors."
    ),
}


@dataclass(frozen=True)
class SampleSummary:
    name: str
    instruments: int
    rows: int
    start: date
    end: date
    note: str


def load_sample(store: Store, name: str = "sp500") -> SampleSummary:
    """Load a real sample into a store, as one commit per table."""
    if name not in SAMPLES:
        raise UsageError(f"unknown sample {name!r}; available: {', '.join(SAMPLES)}")
    try:
        from skfolio.datasets import load_sp500_dataset
    except ImportError:
        raise UsageError(
            "the sp500 sample ships with skfolio: pip install 'quarry[samples]'"
        ) from None
    import polars as pl

    from quarry.data._ingest import ingest_frame
    from quarry.data._schemas import table_spec

    prices = load_sp500_dataset()
    wide = pl.from_pandas(prices.reset_index()).rename({prices.index.name or "index": "date"})
    long = (
        wide.unpivot(index="date", variable_name="instrument", value_name="close")
        .with_columns(pl.col("date").cast(pl.Date))
        .drop_nulls("close")
        .sort("instrument", "date")
    )
    nulls = {c: pl.lit(None, pl.Float64) for c in ("open", "high", "low", "volume", "vwap")}
    bars = long.with_columns(**nulls, factor=pl.lit(1.0))
    first, last = long["date"].min(), long["date"].max()
    assert isinstance(first, date) and isinstance(last, date)
    kt = datetime.combine(last + timedelta(days=1), datetime.min.time(), UTC)
    spans = long.group_by("instrument").agg(
        pl.col("date").min().alias("start"), pl.col("date").max().alias("end")
    )
    instruments = spans.select(
        "instrument",
        pl.col("instrument").alias("name"),
        pl.lit(None, pl.String).alias("exchange"),
        pl.col("start").alias("list_date"),
        pl.lit(None, pl.Date).alias("delist_date"),
        pl.lit(None, pl.String).alias("industry"),
        pl.col("start").alias("valid_from"),
        pl.lit(None, pl.Date).alias("valid_to"),
    )
    # Members until today, as far as the sample knows: an open-ended span.
    universe = spans.select(
        pl.lit(name).alias("universe"), "instrument", "start", pl.lit(None, pl.Date).alias("end")
    )
    source = f"sample:{name}"
    ingest_frame(store, table_spec("instruments"), instruments, knowledge_time=kt, source=source)
    ingest_frame(store, table_spec("universe"), universe, knowledge_time=kt, source=source)
    ingest_frame(store, table_spec("bars"), bars, knowledge_time=kt, source=source)
    return SampleSummary(name, spans.height, bars.height, first, last, SAMPLES[name])
