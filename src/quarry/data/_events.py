"""Text events: a vendor's stories as versions, known from their delivery.

A story (news, a filing, a research report, a social post) may concern several instruments
and change after it first appears: the vendor corrects it (a new version, delivered later) or
retracts it (a version that says so). Every version is a row keyed by (event_id,
delivered_at), so the history is kept, and a version is known from its delivery: a read as
of T sees, for each story, its newest version delivered by T, and nothing of a story
retracted by then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import polars as pl

from quarry.data._resolve import read_latest
from quarry.data._schemas import EVENT_KINDS, EVENTS
from quarry.data._store import Store, to_utc
from quarry.data._times import key_bound, parse_bound
from quarry.data._validate import ROW, Check
from quarry.exceptions import UsageError

__all__ = ["event_versions", "prepare_events", "read_events", "retraction_checks"]

# Codes in a CSV cell may be separated by any of these; stored sorted, joined by a comma.
_SEPARATORS = r"[;|]"


def prepare_events(raw: pl.DataFrame, knowledge_time: datetime) -> pl.DataFrame:
    """A vendor's events file as text columns the validator reads: a list of instruments
    (JSON lines, Parquet) or codes separated by , ; or | become sorted, comma-joined codes,
    and a version with no ``delivered_at`` was delivered at the ingest's knowledge time."""
    out = raw
    if "instruments" in out.columns:
        codes = pl.col("instruments")
        if isinstance(out.schema["instruments"], pl.List):
            codes = codes.cast(pl.List(pl.String)).list.join(",")
        else:
            # A JSON lines file mixing lists and plain text reads the lists as their JSON.
            codes = codes.cast(pl.String)
            codes = (
                pl.when(codes.str.strip_chars().str.starts_with("["))
                .then(codes.str.replace_all(r'[\[\]"]', ""))
                .otherwise(codes)
            )
        cleaned = (
            codes.str.replace_all(_SEPARATORS, ",")
            .str.split(",")
            .list.eval(pl.element().str.strip_chars().filter(pl.element() != ""))
            .list.unique()
            .list.sort()
        )
        joined = pl.when(cleaned.list.len() > 0).then(cleaned.list.join(","))
        out = out.with_columns(joined.alias("instruments"))
    stamp = knowledge_time.isoformat()
    if "delivered_at" not in out.columns or out.schema["delivered_at"] == pl.Null:
        out = out.with_columns(pl.lit(stamp).alias("delivered_at"))
    elif out.schema["delivered_at"] == pl.String:
        given = pl.col("delivered_at").str.strip_chars()
        out = out.with_columns(
            pl.when(given.is_null() | (given == ""))
            .then(pl.lit(stamp))
            .otherwise(given)
            .alias("delivered_at")
        )
    elif isinstance(out.schema["delivered_at"], pl.Datetime):
        zone = out.schema["delivered_at"].time_zone
        fill = knowledge_time if zone else knowledge_time.replace(tzinfo=None)
        out = out.with_columns(pl.col("delivered_at").fill_null(fill))
    return out


def retraction_checks(store: Store, typed: pl.DataFrame, kt: datetime) -> list[Check]:
    """A retraction of a story neither the file nor the store (as known at ``kt``) has is
    refused: it would retract nothing, which is almost always a wrong id."""
    retracting = typed.filter(
        pl.col("retracted").fill_null(False) & pl.col("event_id").is_not_null()
    )
    if retracting.height == 0:
        return []
    stories = typed.filter(~pl.col("retracted").fill_null(False)).select("event_id", "delivered_at")
    ids = retracting["event_id"].unique()
    # One read of the store serves both checks: the stories it knows, and when they came.
    stored = (
        event_versions(store, kt, event_ids=ids.to_list())
        .filter(~pl.col("retracted"))
        .select("event_id", "delivered_at")
    )
    firsts = (
        pl.concat([stories, stored])
        .group_by("event_id")
        .agg(pl.col("delivered_at").min().alias("first"))
    )
    unknown = retracting.filter(~pl.col("event_id").is_in(firsts["event_id"].implode()))[ROW]
    # A retraction delivered before the story it retracts was: the times are wrong.
    early = retracting.join(firsts, on="event_id").filter(pl.col("delivered_at") < pl.col("first"))
    checks = []
    if unknown.len():
        checks.append(
            Check(
                "retraction of a story the store does not know",
                "event_id",
                pl.lit(typed[ROW].is_in(unknown.implode())),
                "check the event_id (a retraction names a story ingested before, or in this file)",
            )
        )
    if early.height:
        checks.append(
            Check(
                "retraction delivered before the story it retracts",
                "delivered_at",
                pl.lit(typed[ROW].is_in(early[ROW].implode())),
                "check the times: a story is retracted after it was delivered (a version "
                "without delivered_at was delivered at the ingest's knowledge time)",
            )
        )
    return checks


def event_versions(
    store: Store,
    as_of: datetime | str | None = None,
    *,
    event_ids: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Every version of every story known at ``as_of``: the store's commits up to then, and
    of those the versions delivered by then. Sorted by event_id, delivered_at."""
    when = to_utc(as_of)
    predicate = pl.col("event_id").is_in(list(event_ids)) if event_ids is not None else None
    versions = read_latest(store, EVENTS, EVENTS.names, predicate, when)
    if when is not None:
        versions = versions.filter(pl.col("delivered_at") <= when)
    return versions.with_columns(pl.col("retracted").fill_null(False))


def read_events(
    store: Store,
    *,
    as_of: datetime | str | None = None,
    instruments: Sequence[str] | None = None,
    kinds: Sequence[str] | None = None,
    start: date | datetime | str | None = None,
    end: date | datetime | str | None = None,
) -> pl.DataFrame:
    """The stories known at ``as_of`` as they read then: each one's newest version, with
    the time it was first delivered (from when it counts) and how many versions there were;
    a story retracted by ``as_of`` is absent. ``start``/``end`` bound the first delivery
    (UTC; a date takes its whole day), ``instruments`` keeps stories about any of them,
    ``kinds`` those of these kinds. Sorted by first delivery, then event_id."""
    if kinds is not None:
        unknown = [k for k in kinds if k not in EVENT_KINDS]
        if unknown:
            raise UsageError(
                f"unknown event kind {unknown[0]!r}; choose from {', '.join(EVENT_KINDS)}"
            )
    if store.table("events") is None:
        store.require()
        return pl.DataFrame(schema=_READ_SCHEMA)
    versions = event_versions(store, as_of)
    stories = (
        versions.group_by("event_id")
        .agg(
            pl.col("delivered_at").filter(~pl.col("retracted")).min().alias("first_delivered_at"),
            pl.len().alias("versions"),
            pl.all().sort_by("delivered_at").last(),
        )
        .filter(~pl.col("retracted"))
    )
    # A date bounds by its whole day (UTC), as the bars' reads do.
    lo, hi = (
        key_bound(parse_bound(v, what) if isinstance(v, str) else v, True, upper)
        for v, what, upper in ((start, "start", False), (end, "end", True))
    )
    if lo is not None:
        stories = stories.filter(pl.col("first_delivered_at") >= lo)
    if hi is not None:
        stories = stories.filter(pl.col("first_delivered_at") <= hi)
    if kinds is not None:
        stories = stories.filter(pl.col("kind").is_in(list(kinds)))
    if instruments is not None:
        wanted = list(instruments)
        stories = stories.filter(
            pl.col("instruments").str.split(",").list.set_intersection(wanted).list.len() > 0
        )
    return stories.select(list(_READ_SCHEMA)).sort("first_delivered_at", "event_id")


_READ_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "first_delivered_at": EVENTS.schema()["delivered_at"],
    "delivered_at": EVENTS.schema()["delivered_at"],
    "published_at": EVENTS.schema()["published_at"],
    "instruments": pl.String(),
    "kind": pl.String(),
    "source": pl.String(),
    "title": pl.String(),
    "body": pl.String(),
    "versions": pl.UInt32(),
}
