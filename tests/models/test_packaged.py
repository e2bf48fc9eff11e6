"""A packaged model scores a frame, or a matrix of rows, as its estimator does the processed
frame: the reference is the plain route (the processors' frame transform, then the
estimator on the columns in training's order and type)."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from quarry.exceptions import UsageError
from quarry.features import Pipeline
from quarry.features._processors import CSZScoreNorm, Fillna, RobustZScoreNorm, ZScoreNorm
from quarry.models import PackagedModel, Recipe
from quarry.models._estimators import SMALL_PREDICT_ROWS, make_model

FEATURES = ("A", "B", "C", "D")
FIT = {"fit_start": date(2020, 1, 1), "fit_end": date(2020, 3, 31)}


def _frame(seed: int, days: int = 120, instruments: int = 30) -> pl.DataFrame:
    """instruments x days of four features (one with infinities, all with missing values)
    and a label the first two explain."""
    rng = np.random.default_rng(seed)
    n = days * instruments
    x = rng.normal(size=(n, len(FEATURES))) * [1.0, 5.0, 0.01, 100.0]
    x[rng.random(x.shape) < 0.1] = np.nan
    x[rng.random(n) < 0.02, 2] = np.inf
    y = np.nan_to_num(x[:, 0]) - 0.2 * np.nan_to_num(x[:, 1]) + rng.normal(0, 0.5, n)
    dates = pl.date_range(date(2020, 1, 1), date(2020, 1, 1) + (days - 1) * pl.duration(days=1),
                          eager=True)  # fmt: skip
    return pl.DataFrame({
        "instrument": [f"S{i:03d}" for i in range(instruments)] * days,
        "date": np.repeat(dates.to_numpy(), instruments),
        **{c: x[:, i] for i, c in enumerate(FEATURES)},
        "LABEL0": y,
    })  # fmt: skip


def _packaged(kind: str, steps: Pipeline | None) -> tuple[PackagedModel, pl.DataFrame]:
    frame = _frame(1)
    processed = steps.fit_transform(frame) if steps is not None else frame
    train = processed.filter(pl.col("date") <= FIT["fit_end"])
    valid = processed.filter(pl.col("date") > FIT["fit_end"])
    model = make_model(kind, {"num_boost_round": 20} if kind == "lightgbm" else None)

    def xy(f: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        return f.select(FEATURES).to_numpy().astype(np.float32), f["LABEL0"].to_numpy()

    model.fit(*xy(train), *xy(valid))
    columns = ("D", "A", "C", "B")  # training's own order, not the frame's
    return PackagedModel(kind, model, columns, Recipe(processors=steps)), _frame(2).drop("LABEL0")


def _plain(packaged: PackagedModel, frame: pl.DataFrame) -> np.ndarray:
    if packaged.recipe.processors is not None:
        frame = packaged.recipe.processors.transform(frame, inference=True)
    x = frame.select(pl.col(packaged.columns).cast(pl.Float32)).to_numpy()
    return np.asarray(packaged.estimator.predict(x), dtype=np.float64)


ROW_WISE = {
    "robust+fillna": lambda: Pipeline([RobustZScoreNorm(**FIT), Fillna()]),
    "zscore+fillna": lambda: Pipeline([ZScoreNorm(**FIT), Fillna()]),
    "none": lambda: None,
}


@pytest.mark.parametrize("kind", ["lightgbm", "linear"])
@pytest.mark.parametrize("steps", list(ROW_WISE), ids=str)
def test_scores_of_a_frame_and_of_a_matrix_equal_the_plain_route(kind: str, steps: str) -> None:
    packaged, frame = _packaged(kind, ROW_WISE[steps]())
    assert packaged.row_wise
    want = _plain(packaged, frame)
    assert np.unique(want).size > 40  # the model tells rows apart
    np.testing.assert_array_equal(packaged.score(frame), want)
    # a few rows at a time, as serving scores them (one thread), in any column order
    names = ["C", "A", "D", "B"]
    x = frame.select(names).to_numpy()
    for rows in (slice(0, 1), slice(7, 70), slice(0, SMALL_PREDICT_ROWS + 1)):
        got = packaged.score_matrix(x[rows], names)
        if kind == "lightgbm":  # a tree compares inputs with thresholds: the same bits
            np.testing.assert_array_equal(got, want[rows])
        else:  # float32 BLAS sums in an order that depends on the number of rows
            np.testing.assert_allclose(got, want[rows], rtol=1e-6, atol=1e-6)


def test_a_frame_larger_than_a_chunk_scores_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    import quarry.models._packaged as module

    packaged, frame = _packaged("lightgbm", ROW_WISE["robust+fillna"]())
    monkeypatch.setattr(module, "CHUNK_ROWS", 1000)  # the frame is 3,600 rows: 4 chunks
    np.testing.assert_array_equal(packaged.score(frame), _plain(packaged, frame))
    assert packaged.score(frame.head(0)).shape == (0,)
    with pytest.raises(UsageError, match="does not have: B"):  # checked with no rows too
        packaged.score(frame.head(0).drop("B"))


def test_a_model_whose_processors_read_whole_dates_scores_frames_only() -> None:
    packaged, frame = _packaged("lightgbm", Pipeline([CSZScoreNorm(), Fillna()]))
    assert not packaged.row_wise
    np.testing.assert_array_equal(packaged.score(frame), _plain(packaged, frame))
    with pytest.raises(UsageError, match="read whole dates"):
        packaged.score_matrix(frame.select(FEATURES).to_numpy(), list(FEATURES))


def test_a_matrix_without_a_column_the_model_reads_is_refused_by_name() -> None:
    packaged, frame = _packaged("linear", None)
    with pytest.raises(UsageError, match="does not have: B"):
        packaged.score_matrix(frame.select("A", "C", "D").to_numpy(), ["A", "C", "D"])
