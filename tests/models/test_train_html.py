"""A training's rich view: each segment's figures are the result's metrics, and what the
model learned nothing from is said."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl

from quarry.models import Segments, TrainResult, make_model, train
from tests.html_parsing import assert_safe

DAYS, NAMES = 120, 30
SEGMENTS = Segments.parse(
    {
        "train": "2020-01-01:2020-02-29",
        "valid": "2020-03-04:2020-03-31",
        "test": "2020-04-04:2020-04-29",
    }
)
# heading -> (metrics key, how it is written), as a reader would check them
COLUMNS = {
    "IC": ("ic", "{:.4f}"),
    "ICIR": ("icir", "{:.3f}"),
    "Rank IC": ("rank_ic", "{:.4f}"),
    "Rank ICIR": ("rank_icir", "{:.3f}"),
    "IC t-stat": ("ic_t", "{:.3f}"),
    "Rank IC t-stat": ("rank_ic_t", "{:.3f}"),
    "Long-short (mean)": ("long_short_mean", "{:.2%}"),
}


def _features(flat: bool = False, seed: int = 0) -> pl.DataFrame:
    """Two features and a label, 120 days x 30 instruments; the label follows the first
    feature. ``flat``: the features vary by day only, so no instrument differs from another."""
    rng = np.random.default_rng(seed)
    shape = (DAYS, NAMES)
    signal = rng.normal(size=(DAYS, 1)) if flat else rng.normal(size=shape)
    a = np.broadcast_to(signal, shape)
    b = np.broadcast_to(rng.normal(size=(DAYS, 1)), shape) if flat else rng.normal(size=shape)
    label = 0.3 * a + rng.normal(size=shape)
    days = [date(2020, 1, 1) + timedelta(days=k) for k in range(DAYS)]
    return pl.DataFrame(
        {
            "instrument": [f"I{j:02d}" for _ in days for j in range(NAMES)],
            "date": [d for d in days for _ in range(NAMES)],
            "A": a.ravel(),
            "B": b.ravel(),
            "LABEL0": label.ravel(),
        }
    )


def test_each_segments_figures_are_its_metrics() -> None:
    result = train(_features(), SEGMENTS, model="linear", experiment=None)
    view = assert_safe(result._repr_html_())
    assert view.title == "Training: linear"
    segments = view.table("segments")
    assert segments.header == ["segment", *COLUMNS]
    assert [row[0] for row in segments.rows] == ["train", "valid", "test"]
    for row in segments.rows:
        m = result.metrics[row[0]]
        assert row[1:] == [fmt.format(m[key]) for key, fmt in COLUMNS.values()]
    assert result.metrics["test"]["rank_ic"] > 0.1  # the figures are real ones
    facts = view.table("facts").pairs()
    assert facts["Model"] == "linear"
    assert facts["MLflow run"] == "not tracked (experiment=None)"
    assert facts["Test predictions"] == f"{result.predictions.height:,} rows"
    assert facts["Test dates"] == "2020-04-04 to 2020-04-29"
    assert facts["Instruments scored"] == str(NAMES)
    assert "quarry-warnings" not in view.lists


def test_a_model_that_learned_nothing_says_so() -> None:
    result = train(_features(flat=True), SEGMENTS, model="linear", experiment=None)
    assert result.constant
    view = assert_safe(result._repr_html_())
    assert view.lists["quarry-warnings"] == list(result.warnings)
    assert "learned nothing" in view.lists["quarry-warnings"][0]
    test = dict(zip(view.table("segments").header, view.table("segments").rows[-1], strict=True))
    assert test["segment"] == "test" and test["IC"] == "n/a" and test["Rank IC"] == "n/a"


def test_a_tracked_walk_forward_result_shows_its_run_and_test_segment() -> None:
    metrics = {"test": {"ic": 0.05123, "icir": 0.4, "rank_ic": float("nan"), "rank_icir": 0.2,
                        "ic_t": 3.0, "rank_ic_t": 1.5, "long_short_mean": 0.001}}  # fmt: skip
    predictions = pl.DataFrame(
        schema={"instrument": pl.String, "date": pl.Date, "score": pl.Float64}
    )
    result = TrainResult("run-<1>", metrics, predictions, make_model("linear"), 12.345)
    view = assert_safe(result._repr_html_())
    facts = view.table("facts").pairs()
    assert facts["MLflow run"] == "run-<1>" and facts["Fit time"] == "12.3 s"
    assert "Test predictions" not in facts
    rows = view.table("segments").rows
    assert rows == [["test", "0.0512", "0.400", "n/a", "0.200", "3.000", "1.500", "0.10%"]]
