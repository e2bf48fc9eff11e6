"""The point-in-time data store: bitemporal Delta tables, validated ingest, bias-free reads."""

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
