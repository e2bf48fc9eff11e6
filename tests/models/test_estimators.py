"""Model parameters: names checked against each model's table (LightGBM's own for LightGBM),
values the model would reject refused when the model is made, each naming the parameter."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from quarry.exceptions import NotFittedError, UsageError
from quarry.models import LightGBMModel, make_model
from quarry.models._params import validate_params


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"learning_rate": -1}, "lightgbm parameter learning_rate: -1 .*it must be > 0"),
        ({"num_leaves": 0}, "lightgbm parameter num_leaves: 0 .*it must be > 1"),
        ({"max_depth": "abc"}, "lightgbm parameter max_depth: 'abc' .*of type int"),
        ({"learning_rate": "abc"}, "lightgbm parameter learning_rate: 'abc' .*not a number"),
        # an alias, named as given, with LightGBM's own name beside it
        ({"colsample_bytree": 2}, r"colsample_bytree \(LightGBM's feature_fraction\): 2 .*<= 1"),
        ({"num_boost_round": 0}, "num_boost_round: 0 must be a whole number >= 1"),
        ({"learning_rate": None}, "learning_rate: None is not a value"),
        ({"objective": "binary"}, "objective: 'binary' needs a label of 0 and 1"),
        ({"objective": "regresion"}, "unknown objective 'regresion'; did you mean regression"),
        ({"metric": "rmsee"}, "unknown metric 'rmsee'; did you mean rmse"),
        ({"metric": "None"}, "'None' names no metric, and early stopping .* needs one"),
        ({"eta": 0.1, "learning_rate": 0.2}, "eta and learning_rate are the same parameter"),
        ({"random_state": 3}, "random_state: set the seed with --seed"),
        ({"num_leafs": 31}, "unknown lightgbm parameter 'num_leafs'; did you mean num_leaves"),
    ],
)
def test_lightgbm_parameters_it_would_refuse_are_named(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError, match=message):
        make_model("lightgbm", params)
    with pytest.raises(UsageError, match=message):
        validate_params("lightgbm", params)


@pytest.mark.parametrize(
    "params",
    [
        # LightGBM's documented names and aliases, and Quarry's own two
        {"learning_rate": 0.05, "num_leaves": 31, "max_depth": -1},
        {"eta": 0.05, "num_leaf": 31, "min_child_samples": 5, "reg_alpha": 1.0},
        {"sub_feature": 0.5, "subsample_freq": 1, "bagging_fraction": 0.8, "max_bin": 63},
        {"n_estimators": 30, "early_stopping_round": 5, "n_jobs": 1, "metric": ["l2", "l1"]},
        {"num_boost_round": 30, "early_stopping_rounds": 5, "objective": "huber"},
        {"monotone_constraints": [1, -1], "extra_trees": True, "path_smooth": 0.5},
    ],
)
def test_real_lightgbm_parameters_and_aliases_are_accepted(params: dict[str, Any]) -> None:
    assert validate_params("lightgbm", params) == params
    make_model("lightgbm", params)


def _regression(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 2))
    y = x[:, 0] + 0.5 * rng.normal(size=600)
    return x[:400], y[:400], x[400:], y[400:]


def test_an_alias_replaces_the_default_it_names() -> None:
    """Qlib's defaults hold learning_rate 0.2; eta 0.05 must train as learning_rate 0.05
    (given both, LightGBM keeps one and ignores the other without a word)."""
    data = _regression(0)
    common = {"num_boost_round": 20, "early_stopping_rounds": 20, "lambda_l1": 0, "lambda_l2": 0}
    by_alias = LightGBMModel({**common, "eta": 0.05}).fit(*data)
    by_name = LightGBMModel({**common, "learning_rate": 0.05}).fit(*data)
    default = LightGBMModel(common).fit(*data)
    x = data[2]
    np.testing.assert_array_equal(by_alias.predict(x), by_name.predict(x))
    assert not np.allclose(by_alias.predict(x), default.predict(x))
    threads = LightGBMModel({"n_jobs": 1})
    assert threads.lgb_params["num_threads"] == 1 and "n_jobs" not in threads.lgb_params
    rounds = LightGBMModel({"n_estimators": 7, "early_stopping_round": 3})
    assert (rounds.num_boost_round, rounds.early_stopping_rounds) == (7, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"alphas": 1}, "linear parameter alphas: 1; give a list of positive numbers"),
        ({"alphas": [1, -1]}, r"linear parameter alphas: \[1, -1\]; give a list"),
        ({"alphas": []}, r"linear parameter alphas: \[\]; give a list"),
        ({"alpha": [1]}, "unknown linear parameter 'alpha'; did you mean alphas"),
        ({"kind": "elastic"}, "linear parameter kind: 'elastic'; choose ridge or lasso"),
    ],
)
def test_linear_parameters_are_checked(params: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make_model("linear", params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"lr": -1}, "mlp parameter lr: -1; give a positive number"),
        ({"hidden": [32, 0]}, r"mlp parameter hidden: \[32, 0\]; give a list of layer widths"),
        ({"hidden": "64"}, "mlp parameter hidden: '64'; give a list"),
        ({"dropout": 1.5}, "mlp parameter dropout: 1.5; give a number from 0"),
        ({"batch_size": 0}, "mlp parameter batch_size: 0; give a whole number >= 1"),
        ({"hiden": [3]}, "unknown mlp parameter 'hiden'; did you mean hidden"),
    ],
)
def test_mlp_parameters_are_checked(params: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        validate_params("mlp", params)
    pytest.importorskip("torch", reason="the mlp extra (quarry[mlp]) is not installed")
    with pytest.raises(UsageError, match=message):
        make_model("mlp", params)


def test_an_unknown_model_names_the_closest() -> None:
    with pytest.raises(UsageError, match="unknown model 'lgbm'; did you mean lightgbm"):
        validate_params("lgbm", {})


def test_checks_in_parallel_threads_leave_stderr_where_it_was() -> None:
    """The trial booster's stderr is silenced one check at a time: overlapping checks used
    to restore each other's /dev/null and leave the process without a stderr."""
    from concurrent.futures import ThreadPoolExecutor

    before = os.readlink("/proc/self/fd/2")

    def check(_: int) -> None:
        with pytest.raises(UsageError):
            validate_params("lightgbm", {"learning_rate": -1})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(64)))
    assert os.readlink("/proc/self/fd/2") == before != os.devnull


@pytest.mark.parametrize("name", ["lightgbm", "linear", "mlp"])
def test_predict_before_fit_is_a_not_fitted_error(name: str) -> None:
    if name == "mlp":
        pytest.importorskip("torch", reason="the mlp extra (quarry[mlp]) is not installed")
    model = make_model(name)
    with pytest.raises(NotFittedError, match=r"^the model is not trained yet: call fit first$"):
        model.predict(np.zeros((3, 2)))


@pytest.mark.parametrize("name", ["lightgbm", "linear", "mlp"])
def test_a_thread_count_changes_no_score(name: str) -> None:
    # A stream scores on one thread beside its features: the scores are the same ones, for a
    # matrix large enough that LightGBM would otherwise take every thread.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3_000, 4))
    y = x @ np.array([0.5, -1.0, 0.0, 2.0]) + rng.normal(scale=0.1, size=3_000)
    params = {"num_boost_round": 20} if name == "lightgbm" else None
    model = make_model(name, params).fit(x[:2_000], y[:2_000], x[2_000:], y[2_000:])
    many = np.concatenate([x] * 2)  # 6,000 rows: past the few that LightGBM scores alone
    scores = model.predict(many)
    assert np.corrcoef(scores, np.concatenate([y] * 2))[0, 1] > 0.9  # a model that learned
    np.testing.assert_array_equal(model.predict(many, threads=1), scores)
