"""The point-in-time data store: bitemporal Delta tables, validated ingest, bias-free reads.

The names below are imported on first use (PEP 562), not with the package: a command that
only parses its arguments, or prints its help, does not pay for Polars, Delta Lake and Arrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quarry._lazy import exports

if TYPE_CHECKING:
    from quarry.data._health import HealthCheck, HealthReport, check_health
    from quarry.data._ingest import IngestResult, ingest_file, ingest_frame
    from quarry.data._location import Location, parse_location
    from quarry.data._query import DataQuery
    from quarry.data._read import (
        Panel,
        adjustment_factors,
        fundamental_fields,
        industries,
        members,
        read_bars,
        to_panel,
    )
    from quarry.data._readcache import CacheStats, ReadCache
    from quarry.data._remote import DataClient, connect
    from quarry.data._samples import SAMPLES, SampleSummary, load_sample
    from quarry.data._schemas import TABLES, TableSpec, table_spec
    from quarry.data._store import Commit, Store
    from quarry.data._synthetic import GenerateSummary, generate
    from quarry.data._times import first_timed, key_bound, parse_bound, parse_times

# each submodule and the public names it defines
_MODULES = {
    "_health": "HealthCheck HealthReport check_health",
    "_ingest": "IngestResult ingest_file ingest_frame",
    "_location": "Location parse_location",
    "_query": "DataQuery",
    "_readcache": "CacheStats ReadCache",
    "_remote": "DataClient connect",
    "_read": "Panel adjustment_factors fundamental_fields industries members read_bars to_panel",
    "_samples": "SAMPLES SampleSummary load_sample",
    "_schemas": "TABLES TableSpec table_spec",
    "_store": "Commit Store",
    "_synthetic": "GenerateSummary generate",
    "_times": "first_timed key_bound parse_bound parse_times",
}

__all__ = [
    "SAMPLES",
    "TABLES",
    "CacheStats",
    "Commit",
    "DataClient",
    "DataQuery",
    "GenerateSummary",
    "HealthCheck",
    "HealthReport",
    "IngestResult",
    "Location",
    "Panel",
    "ReadCache",
    "SampleSummary",
    "Store",
    "TableSpec",
    "adjustment_factors",
    "check_health",
    "connect",
    "first_timed",
    "fundamental_fields",
    "generate",
    "industries",
    "ingest_file",
    "ingest_frame",
    "key_bound",
    "load_sample",
    "members",
    "parse_bound",
    "parse_location",
    "parse_times",
    "read_bars",
    "table_spec",
    "to_panel",
]


if not TYPE_CHECKING:  # type checkers read the imports above, and flag a misspelled name
    __getattr__, __dir__ = exports(__name__, _MODULES)
