"""Scores of story versions, cached in the store per (event version, scorer version).

A dictionary scorer's score is a function of the text and the scorer's version, so scores
computed once are kept in the ``event_scores`` table and read back; a version missing there
is scored in memory by the registered scorer (``quarry.text``). A scorer that is not a pure
function of the text (the embedding scorer's head, fitted on returns) has only the scores
``quarry data score`` wrote: the newest version written is the one read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from quarry.data._ingest import IngestResult, ingest_frame
from quarry.data._schemas import EVENT_SCORES, KT
from quarry.data._store import Store
from quarry.exceptions import DataError

if TYPE_CHECKING:
    from quarry.text import Scorer

__all__ = ["current_version", "score_versions", "stored_scores", "write_scores"]

_KEY = ["event_id", "delivered_at"]


def _registered(name: str) -> Scorer | None:
    from quarry.text import get_scorer, scorer_names

    return get_scorer(name) if name in scorer_names() else None


def current_version(store: Store, scorer: str, as_of: datetime | None = None) -> str | None:
    """The version of ``scorer`` whose scores a read uses: a registered scorer's own, else
    the newest written to the store by ``as_of`` (None when none was)."""
    registered = _registered(scorer)
    if registered is not None:
        return registered.version
    lf = store.scan("event_scores", as_of=as_of)
    if lf is None:
        return None
    found = (
        lf.filter(pl.col("scorer") == scorer).select(pl.col("version").sort_by(KT).last()).collect()
    )
    return found.item() if found.height else None


def stored_scores(
    store: Store, scorer: str, version: str, as_of: datetime | None = None
) -> pl.DataFrame:
    """The scores the store held at ``as_of`` for one scorer version: event_id,
    delivered_at, score (a head refitted later, under the same version, is not read back)."""
    lf = store.scan("event_scores", as_of=as_of)
    schema = {c: EVENT_SCORES.schema()[c] for c in [*_KEY, "score"]}
    if lf is None:
        return pl.DataFrame(schema=schema)
    return (
        lf.filter((pl.col("scorer") == scorer) & (pl.col("version") == version))
        .select(list(schema))
        .collect()
    )


def score_versions(
    store: Store, versions: pl.DataFrame, scorer: str, as_of: datetime | None = None
) -> pl.Series:
    """One score per row of ``versions`` (event versions with title and body) by
    ``scorer``: from the store's cache, the rest scored now by a registered scorer (null on
    a retraction, which has no text)."""
    version = current_version(store, scorer, as_of)
    if version is None:
        from quarry.text import scorer_names

        known = ", ".join(scorer_names())
        raise DataError(
            f"{store.location}: no scores by {scorer!r}: the dictionary scorers are {known}, and "
            f"a trained scorer's (embed) come from `quarry data score --scorer {scorer}`"
        )
    stories = versions.select(*_KEY, "title", "body", "retracted").with_row_index("__i")
    kept = stored_scores(store, scorer, version, as_of).with_columns(pl.lit(True).alias("__kept"))
    found = stories.join(kept, on=_KEY, how="left")
    # A score kept empty is an answer (a trained head had no fit yet for that story).
    todo = found.filter(pl.col("__kept").is_null() & ~pl.col("retracted"))
    if todo.height:
        registered = _registered(scorer)
        if registered is None:
            raise DataError(
                f"{store.location}: {todo.height} stories have no {scorer!r} score of version "
                f"{version}; run `quarry data score --scorer {scorer}` to score them"
            )
        from quarry.text import text_of

        texts = text_of(todo["title"].to_list(), todo["body"].to_list())
        scored = np.asarray(registered.score(texts), dtype=np.float64)
        fill = pl.DataFrame({"__i": todo["__i"], "__new": scored})
        found = found.join(fill, on="__i", how="left").with_columns(
            pl.coalesce("score", "__new").alias("score")
        )
    return found.sort("__i")["score"]


def write_scores(
    store: Store,
    scores: pl.DataFrame,
    scorer: str,
    version: str,
    *,
    knowledge_time: datetime | None = None,
) -> IngestResult:
    """Commit ``scores`` (event_id, delivered_at, score) as ``scorer`` at ``version``; a
    score already stored unchanged is not written again."""
    frame = scores.select(*_KEY, "score").with_columns(
        pl.lit(scorer).alias("scorer"), pl.lit(version).alias("version")
    )
    return ingest_frame(
        store,
        EVENT_SCORES,
        frame,
        knowledge_time=knowledge_time or datetime.now(UTC),
        source=f"score {scorer} {version}",
    )
