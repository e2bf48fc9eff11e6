"""A registered model's own raw features, computed from a store as research computes them.

The promotion gate scores the champion on a test window with it, and serving scores a
cross-section as of a date: both need the features of the model's recipe (not of the
workflow at hand), from the same engine and the same feature cache as training, so that
what is scored is what was researched.
"""

from __future__ import annotations

import tempfile
from datetime import date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from quarry.exceptions import UsageError
from quarry.features import FeatureCache, materialize
from quarry.features._tables import read_frame
from quarry.tracking._packaged import Packaged

__all__ = ["features_for"]


def features_for(
    packaged: Packaged,
    store: Any,
    *,
    start: date,
    end: date,
    universe: str | None = None,
    as_of: datetime | str | None = None,
    memory: str | None = None,
    cache: FeatureCache | None = None,
) -> pl.DataFrame:
    """The raw features ``packaged`` reads (``packaged.inputs()``), computed from ``store``
    for the rows from ``start`` to ``end`` (windows see all the history before them).

    ``cache``: the feature cache (default: the one under ``$QUARRY_HOME``); ``universe``,
    ``as_of`` and ``memory`` as for ``quarry.features.materialize``. Returns instrument,
    date and one column per feature, as training saw them before its processors (no rows
    when the store has no bar in those days).

    Raises UsageError when the model does not record its features (a version logged before
    models carried their recipe), and DataError when the store has no bars to read.
    """
    inputs = packaged.inputs()
    if not inputs:
        raise UsageError("the model does not record the features it reads: train it again")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.arrow"  # read back at once: Arrow IPC (features._tables)
        # a day with no bar (a weekend, past the store's history) is an empty answer
        materialize(
            store, inputs, path, universe=universe, as_of=as_of, start=start, end=end,
            memory=memory, cache=cache if cache is not None else FeatureCache(),
            allow_empty=True,
        )  # fmt: skip
        return read_frame([path])
