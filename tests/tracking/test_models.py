"""Every model type is logged the same way: a pyfunc model with named columns that carries
its features and fitted processors, and scores raw features by itself."""

from __future__ import annotations

import sys
from datetime import date, timedelta
from pathlib import Path

import mlflow
import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LinearRegression

from quarry.exceptions import UsageError
from quarry.features import Fillna, Pipeline, ZScoreNorm
from quarry.models import PackagedModel, Recipe, Segments, train
from quarry.tracking import experiment_id, load_packaged, quiet_mlflow, register
from tests.tracking.helpers import given_metadata

FEATURES = {"A": "$close / Ref($close, 1) - 1", "B": "Mean($volume, 5)", "C": "$high - $low"}


def _raw_frame(seed: int = 0) -> pl.DataFrame:
    """40 instruments x 200 weekdays of features on very different scales (so that a model
    scored without its z-scoring would score differently), some missing; a label that
    depends on A."""
    rng = np.random.default_rng(seed)
    days = [d for d in (date(2020, 1, 1) + timedelta(i) for i in range(290)) if d.weekday() < 5]
    n, t = 40, len(days)
    a = rng.normal(0, 0.02, (t, n))
    b = rng.normal(1e6, 2e5, (t, n))
    c = rng.normal(5.0, 1.0, (t, n))
    c[rng.random((t, n)) < 0.05] = np.nan
    label = 0.5 * a + rng.normal(0, 0.02, (t, n))
    return pl.DataFrame(
        {
            "instrument": [f"S{i:02d}" for _ in days for i in range(n)],
            "date": [d for d in days for _ in range(n)],
            "A": a.ravel(),
            "B": b.ravel(),
            "C": c.ravel(),
            "LABEL0": label.ravel(),
        }
    )


SEGMENTS = Segments.parse(
    {
        "train": "2020-01-01:2020-06-30",
        "valid": "2020-07-06:2020-08-31",
        "test": "2020-09-04:2020-10-16",
    }
)
PARAMS = {
    "lightgbm": {"num_boost_round": 20},
    "linear": {},
    "mlp": {"hidden": [8], "max_epochs": 2},
}


@pytest.mark.parametrize("model", ["lightgbm", "linear", "mlp"])
def test_a_logged_model_scores_raw_features_by_itself(model: str, tmp_path: Path) -> None:
    raw = _raw_frame()
    processors = Pipeline([ZScoreNorm(fit_start="2020-01-01", fit_end="2020-06-30"), Fillna()])
    processed = processors.fit_transform(raw)
    recipe = Recipe(FEATURES, "Ref($close, -2)/Ref($close, -1) - 1", processors)
    result = train(processed, SEGMENTS, model=model, params=PARAMS[model], horizon=2,
                   experiment="packaged", recipe=recipe)  # fmt: skip
    assert result.run_id is not None
    version = register(result.run_id, f"m-{model}", given_metadata())

    # a plain MLflow client: named columns, raw features in, the training's scores out
    loaded = mlflow.pyfunc.load_model(f"models:/m-{model}/{version}")
    schema = loaded.metadata.get_input_schema()
    assert schema is not None and schema.input_names() == ["instrument", "date", "A", "B", "C"]
    test = raw.filter(pl.col("date").is_between(date(2020, 9, 4), date(2020, 10, 16)))
    scores = np.asarray(loaded.predict(test.drop("LABEL0").to_pandas()), dtype=np.float64)
    expected = result.predictions.sort("instrument", "date")
    got = test.select("instrument", "date").with_columns(score=scores).sort("instrument", "date")
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-6)
    # the raw features are not what the model learned on: its own processors matter
    assert not np.allclose(
        loaded.predict(processed.filter(pl.col("date") >= date(2020, 9, 4)).drop("LABEL0")
                       .to_pandas()), scores)  # fmt: skip

    packaged = load_packaged(f"m-{model}", version)
    assert packaged.model_type == model and packaged.columns == ("A", "B", "C")
    assert packaged.recipe.features == FEATURES and packaged.inputs() == FEATURES
    np.testing.assert_allclose(packaged.score(test), scores, rtol=1e-6)


def test_a_version_that_cannot_be_rebuilt_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version logged before models carried their recipe, and one whose pickle names a
    module this machine does not have: each is a one-line reason, never a crash."""
    with mlflow.start_run(experiment_id=experiment_id("old")) as run, quiet_mlflow():
        mlflow.sklearn.log_model(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]),
                                 name="model", pip_requirements=[])  # fmt: skip
    old = register(run.info.run_id, "old", given_metadata())
    with pytest.raises(UsageError, match="old version 1 was not logged with its features"):
        load_packaged("old", old)

    (tmp_path / "gone_module.py").write_text(
        "from quarry.tracking._pyfunc import QuarryPyfunc\nclass Moved(QuarryPyfunc):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from gone_module import Moved  # type: ignore[import-not-found]

    raw = _raw_frame()
    result = train(raw, SEGMENTS, model="linear", experiment=None)
    packaged = PackagedModel("linear", result.model, ("A", "B", "C"), Recipe(FEATURES))
    with mlflow.start_run(experiment_id=experiment_id("gone")) as run, quiet_mlflow():
        mlflow.pyfunc.log_model(name="model", python_model=Moved(packaged), pip_requirements=[])
    version = register(run.info.run_id, "gone", given_metadata())
    monkeypatch.delitem(sys.modules, "gone_module")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(tmp_path)])
    with pytest.raises(UsageError, match=r"gone version 1 cannot be loaded: .*gone_module"):
        load_packaged("gone", version)
