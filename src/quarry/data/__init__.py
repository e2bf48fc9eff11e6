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
    from quarry.data._read import (
        Panel,
        adjustment_factors,
        fundamental_fields,
        industries,
        members,
        read_bars,
        to_panel,
    )
    from quarry.data._samples import SAMPLES, SampleSummary, load_sample
    from quarry.data._schemas import TABLES, TableSpec, table_spec
    from quarry.data._store import Commit, Store
    from quarry.data._synthetic import GenerateSummary, generate

# each public name and the module that defines it
_HOME = {
    "HealthCheck": "_health", "HealthReport": "_health", "check_health": "_health",
    "IngestResult": "_ingest", "ingest_file": "_ingest", "ingest_frame": "_ingest",
    "Location": "_location", "parse_location": "_location",
    "Panel": "_read", "adjustment_factors": "_read", "fundamental_fields": "_read",
    "industries": "_read", "members": "_read", "read_bars": "_read", "to_panel": "_read",
    "SAMPLES": "_samples", "SampleSummary": "_samples", "load_sample": "_samples",
    "TABLES": "_schemas", "TableSpec": "_schemas", "table_spec": "_schemas",
    "Commit": "_store", "Store": "_store",
    "GenerateSummary": "_synthetic", "generate": "_synthetic",
}  # fmt: skip

__all__ = [
    "SAMPLES",
    "TABLES",
    "Commit",
    "GenerateSummary",
    "HealthCheck",
    "HealthReport",
    "IngestResult",
    "Location",
    "Panel",
    "SampleSummary",
    "Store",
    "TableSpec",
    "adjustment_factors",
    "check_health",
    "fundamental_fields",
    "generate",
    "industries",
    "ingest_file",
    "ingest_frame",
    "load_sample",
    "members",
    "parse_location",
    "read_bars",
    "table_spec",
    "to_panel",
]


__getattr__, __dir__ = exports(__name__, _HOME)
