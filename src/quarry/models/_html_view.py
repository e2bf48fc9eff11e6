"""A training's rich view in a notebook (``TrainResult._repr_html_``): the model, its MLflow
run, each segment's IC, ICIR, Rank IC and Rank ICIR, the test predictions' span, and the
warnings.

No daily IC chart: a result keeps the test scores but not the labels they were measured
against (the features hold them); ``quarry.signals.analyze`` on the scores joined with the
labels gives the daily IC and its own view.

Takes the result's parts rather than the result, so that this module and ``_train`` do not
import each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from quarry._html import figure, items, paragraph, table, view

__all__ = ["COLUMNS", "train_html"]

#: each segment's figures: key in ``TrainResult.metrics[segment]``, heading, kind
COLUMNS = (
    ("ic", "IC", "ic"),
    ("icir", "ICIR", "num"),
    ("rank_ic", "Rank IC", "ic"),
    ("rank_icir", "Rank ICIR", "num"),
    ("ic_t", "IC t-stat", "num"),
    ("rank_ic_t", "Rank IC t-stat", "num"),
    ("long_short_mean", "Long-short (mean)", "pct"),
)
SEGMENTS = ("train", "valid", "test")


def train_html(
    model: str,
    metrics: Mapping[str, Mapping[str, float]],
    predictions: pl.DataFrame,
    *,
    run_id: str | None,
    seconds: float,
    warnings: Sequence[str] = (),
) -> str:
    """The view of a training of ``model`` (its name) with these per-segment ``metrics``
    and test ``predictions`` (see ``TrainResult``)."""
    order = [s for s in SEGMENTS if s in metrics] + [s for s in metrics if s not in SEGMENTS]
    rows = [
        [segment, *(figure(metrics[segment].get(key), kind) for key, _, kind in COLUMNS)]
        for segment in order
    ]
    facts = [
        ["Model", model],
        ["MLflow run", run_id or "not tracked (experiment=None)"],
        ["Fit time", f"{seconds:,.1f} s"],
    ]
    if predictions.height and "date" in predictions.columns:
        dates = predictions["date"]
        facts.append(["Test predictions", f"{predictions.height:,} rows"])
        facts.append(["Test dates", f"{dates.min()!s} to {dates.max()!s}"])
        if "instrument" in predictions.columns:
            facts.append(
                ["Instruments scored", figure(predictions["instrument"].n_unique(), "int")]
            )
    return view(
        f"Training: {model}",
        items(warnings, "warnings"),
        table(facts, name="facts"),
        table(rows, header=["segment", *(h for _, h, _ in COLUMNS)], name="segments"),
        paragraph(
            "IC: the mean over days of the cross-sectional correlation of score and label "
            "(Rank IC: of their ranks); ICIR: that mean over its standard deviation; "
            "long-short: the top quantile's mean label less the bottom's."
        ),
        name="train",
    )
