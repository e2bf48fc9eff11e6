"""The five tables of a store: their columns, keys and how a commit changes what is known."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import polars as pl

__all__ = [
    "ALL",
    "BAR_TIME",
    "DELETED",
    "EVENTS",
    "EVENT_KINDS",
    "EVENT_SCORES",
    "INTRADAY_BARS",
    "KT",
    "TABLES",
    "VERSION",
    "Column",
    "TableSpec",
    "table_spec",
]

# Every stored row carries the knowledge time of the commit that wrote it and that commit's
# table version; together they order the versions of one key (a tie on time goes to the later
# commit).
KT = "_kt"
VERSION = "_version"
# A retraction ("this key no longer holds") is a row of its own, so it is history too.
DELETED = "_deleted"
KT_DTYPE = pl.Datetime("us", "UTC")
# The key of intraday bars: the time the bar closed, in UTC (daily bars key on their date).
BAR_TIME = pl.Datetime("us", "UTC")
# The built-in universe of every instrument in a store; no stored universe may take its name.
ALL = "all"


@dataclass(frozen=True)
class Column:
    """One column of a table.

    ``required``: an input file must have it. ``nullable``: it may hold empty values.
    ``non_negative``/``positive``: value checks applied on ingest.
    """

    name: str
    dtype: type[pl.DataType] | pl.DataType
    required: bool = True
    nullable: bool = False
    non_negative: bool = False
    positive: bool = False
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class TableSpec:
    """A table: its columns, the key that identifies one fact, and its commit semantics.

    ``upsert``: a commit adds or corrects the rows it carries; other keys keep what was known.
    ``snapshot``: a commit replaces everything known for its ``snapshot_by`` value (a universe
    file is the whole membership of that universe).
    """

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    semantics: Literal["upsert", "snapshot"] = "upsert"
    snapshot_by: tuple[str, ...] = ()
    # (column, column whose value it takes when empty)
    defaults: tuple[tuple[str, str], ...] = ()

    @property
    def intraday(self) -> bool:
        """Whether this is the spec of intraday bars (keyed by time, not date)."""
        return self.name == "bars" and self.schema()["date"] == BAR_TIME

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def values(self) -> list[str]:
        return [c.name for c in self.columns if c.name not in self.key]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    def stored_schema(self) -> pl.Schema:
        """The columns as stored: the table's own and the system columns."""
        system: dict[str, pl.DataType] = {
            KT: KT_DTYPE,
            VERSION: pl.Int64(),
            DELETED: pl.Boolean(),
        }
        return pl.Schema({**dict(self.schema()), **system})

    def conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The frame with this table's columns, in order and type; absent optional columns
        are added empty, an absent required one is an error."""
        from quarry.exceptions import UsageError

        missing = [c.name for c in self.columns if c.name not in frame.columns]
        required = [m for m in missing if self.column(m).required]
        if required:
            raise UsageError(f"{self.name}: missing column(s) {', '.join(required)}")
        return (
            frame.with_columns([pl.lit(None, self.column(m).dtype).alias(m) for m in missing])
            .select([pl.col(c.name).cast(c.dtype) for c in self.columns])
            .with_columns(pl.coalesce(col, other).alias(col) for col, other in self.defaults)
        )


BARS = TableSpec(
    "bars",
    (
        Column("instrument", pl.String),
        Column("date", pl.Date),
        Column("open", pl.Float64, non_negative=True),
        Column("high", pl.Float64, non_negative=True),
        Column("low", pl.Float64, non_negative=True),
        Column("close", pl.Float64, non_negative=True),
        Column("volume", pl.Float64, non_negative=True),
        Column("vwap", pl.Float64, required=False, nullable=True, non_negative=True),
        Column("factor", pl.Float64, required=False, nullable=True, positive=True),
    ),
    key=("instrument", "date"),
)

# A store holds bars of one frequency. Intraday bars (1 s, 1 min, 5 min, ...) keep the column
# name ``date`` so that every reader, the features and the models take them unchanged; the
# value is the bar's time. The first bars a store gets decide which it holds.
INTRADAY_BARS = dataclasses.replace(
    BARS,
    columns=tuple(
        dataclasses.replace(c, dtype=BAR_TIME) if c.name == "date" else c for c in BARS.columns
    ),
)

INSTRUMENTS = TableSpec(
    "instruments",
    (
        Column("instrument", pl.String),
        Column("name", pl.String, required=False, nullable=True),
        Column("exchange", pl.String, required=False, nullable=True),
        Column("list_date", pl.Date),
        Column("delist_date", pl.Date, required=False, nullable=True),
        Column("industry", pl.String, required=False, nullable=True),
        # Industry history: one row per classification; valid_from defaults to list_date.
        Column("valid_from", pl.Date, required=False, nullable=True),
        Column("valid_to", pl.Date, required=False, nullable=True),
    ),
    key=("instrument", "valid_from"),
    defaults=(("valid_from", "list_date"),),
)

UNIVERSE = TableSpec(
    "universe",
    (
        Column("universe", pl.String, required=False),
        Column("instrument", pl.String),
        Column("start", pl.Date),
        Column("end", pl.Date, required=False, nullable=True),
    ),
    key=("universe", "instrument", "start"),
    semantics="snapshot",
    snapshot_by=("universe",),
)

FUNDAMENTALS = TableSpec(
    "fundamentals",
    (
        Column("instrument", pl.String),
        Column("field", pl.String),
        Column("period_end", pl.Date),
        Column("knowledge_date", pl.Date),
        Column("value", pl.Float64),
    ),
    key=("instrument", "field", "period_end", "knowledge_date"),
)

CORPORATE_ACTIONS = TableSpec(
    "corporate_actions",
    (
        Column("instrument", pl.String),
        Column("ex_date", pl.Date),
        Column("kind", pl.String, choices=("split", "dividend")),
        # split: new shares per old share (2.0 for a 2-for-1); dividend: cash per share.
        Column("ratio", pl.Float64, required=False, nullable=True, positive=True),
        Column("amount", pl.Float64, required=False, nullable=True, non_negative=True),
    ),
    key=("instrument", "ex_date", "kind"),
)

# Text events (news, filings, research reports, social posts) about one or more instruments.
# A row is one version of a story as the vendor delivered it: a correction is a new row of
# the same event_id delivered later, a retraction a row with ``retracted`` set. Each version
# is known from its ``delivered_at`` (when no file column gives it, the ingest's knowledge
# time), never from its ``published_at``: a story that reached us late counts from then.
EVENT_KINDS = ("news", "filing", "report", "social")
EVENTS = TableSpec(
    "events",
    (
        Column("event_id", pl.String),
        Column("delivered_at", BAR_TIME, required=False),
        # Sorted, comma-separated instrument codes (a list in JSONL or Parquet, or text with
        # , ; or | between codes in CSV). These four are needed on a story, and a file of
        # retractions only has none of them: their absence is checked row by row.
        Column("instruments", pl.String, nullable=True, required=False),
        Column("published_at", BAR_TIME, nullable=True, required=False),
        Column("kind", pl.String, nullable=True, choices=EVENT_KINDS, required=False),
        Column("title", pl.String, nullable=True, required=False),
        Column("body", pl.String, required=False, nullable=True),
        Column("source", pl.String, required=False, nullable=True),
        Column("retracted", pl.Boolean, required=False, nullable=True),
    ),
    key=("event_id", "delivered_at"),
)

# Scores of event versions by a scorer at a version: a cache (scores are a pure function of
# the text and the scorer, or, for a trained head, of the head's fit), written by
# ``quarry data score`` and read by the text fields of ``read_bars``.
EVENT_SCORES = TableSpec(
    "event_scores",
    (
        Column("event_id", pl.String),
        Column("delivered_at", BAR_TIME),
        Column("scorer", pl.String),
        Column("version", pl.String),
        Column("score", pl.Float64, nullable=True),
    ),
    key=("event_id", "delivered_at", "scorer", "version"),
)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (BARS, INSTRUMENTS, UNIVERSE, FUNDAMENTALS, CORPORATE_ACTIONS, EVENTS, EVENT_SCORES)
}
# The command line says "actions"; the table is corporate_actions.
_ALIASES = {"actions": "corporate_actions"}


def table_spec(name: str) -> TableSpec:
    """The spec of a table by its name or command-line alias."""
    from quarry.exceptions import UsageError

    spec = TABLES.get(_ALIASES.get(name, name))
    if spec is None:
        raise UsageError(
            f"unknown table {name!r}; choose one of: {', '.join([*TABLES, *_ALIASES])}"
        )
    return spec
