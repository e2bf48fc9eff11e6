"""Hyperparameter search: the budget spent in batches of trials, nested MLflow runs, the best
trial's parameters returned; the same search on the local and the Ray executor."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from quarry._json import dumps
from quarry.exceptions import LookaheadError, UsageError
from quarry.executors import Executor, Shared, executor
from quarry.models import Segments, search, train
from quarry.tracking import client
from tests.models.helpers import SEGMENTS, feature_frame


@pytest.mark.slow
def test_batched_trials_keep_the_budget_and_nest_under_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    frame = feature_frame(tmp_path, 0.08, 11)
    space = {"learning_rate": ("float", 0.02, 0.3, "log"), "num_leaves": ("int", 4, 64)}
    result = search(
        frame, SEGMENTS, space=space, fixed={"num_boost_round": 30}, trials=6, jobs=2,
        experiment="search-test",
    )  # fmt: skip
    assert len(result.trials) == 6  # the budget is the whole search's, not per batch
    values = [t["value"] for t in result.trials]
    assert result.best_value == max(values)
    best = next(t for t in result.trials if t["value"] == result.best_value)
    assert {k: result.best_params[k] for k in space} == best["params"]
    assert result.best_params["num_boost_round"] == 30

    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name("search-test")
    assert experiment is not None
    children = mlflow_client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'"
    )
    assert len(children) == 6
    logged = sorted(r.data.metrics["valid_rank_ic"] for r in children)
    assert logged == pytest.approx(sorted(values))


@pytest.mark.slow
def test_progress_hears_each_trial_with_the_best_so_far(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    frame = feature_frame(tmp_path, 0.08, 12)
    heard: list[str] = []
    result = search(
        frame, SEGMENTS, space={"num_leaves": ("int", 4, 32)}, fixed={"num_boost_round": 20},
        trials=4, jobs=1, experiment="search-progress", progress=heard.append,
    )  # fmt: skip
    lines = [m for m in heard if m.startswith("trial ")]
    assert [m.split(":")[0] for m in lines] == [f"trial {k}/4" for k in range(1, 5)]
    # each line's best is the running maximum of the trials' values, in their order
    values = [t["value"] for t in sorted(result.trials, key=lambda t: t["number"])]
    bests = [float(m.rsplit("best ", 1)[1]) for m in lines]
    running = [max(values[: k + 1]) for k in range(len(values))]
    assert bests == pytest.approx(running, abs=5e-5)


# -- a small synthetic frame: fast enough for many trials, a signal LightGBM finds ------------

SMALL = Segments.parse(
    {"train": "2020-01-01:2020-06-30", "valid": "2020-07-05:2020-09-30",
     "test": "2020-10-05:2020-10-26"}
)  # fmt: skip
SPACE = {"num_leaves": ("int", 4, 32), "learning_rate": ("float", 0.02, 0.3, "log")}
FIXED = {"num_boost_round": 20, "lambda_l1": 1.0, "lambda_l2": 1.0}


def _small(seed: int = 0, instruments: int = 40, days: int = 300) -> pl.DataFrame:
    """Three features on consecutive days; the label is 0.3 x the first plus noise."""
    rng = np.random.default_rng(seed)
    dates = np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-01-01") + days)
    x = rng.normal(size=(days, instruments, 3))
    label = 0.3 * x[:, :, 0] + rng.normal(size=(days, instruments))
    return pl.DataFrame(
        {
            "instrument": np.tile([f"I{k:02d}" for k in range(instruments)], days),
            "date": pl.Series(np.repeat(dates, instruments)).cast(pl.Date),
            **{f"F{j}": x[:, :, j].ravel() for j in range(3)},
            "LABEL0": label.ravel(),
        }
    )


def _with_pid(piece: tuple[Any, Any], **shared: Any) -> tuple[int, Any]:
    fn, item = piece
    return os.getpid(), fn(item, **shared)


class _Traced(Executor):
    """A real executor, recording what search asks of it and where each piece ran."""

    name = "traced"

    def __init__(self, inner: Executor) -> None:
        self.inner, self.shares, self.batches, self.pids = inner, 0, list[int](), list[int]()

    @property
    def workers(self) -> int:
        return self.inner.workers

    def share(self, value: Any) -> Shared[Any]:
        self.shares += 1
        return self.inner.share(value)

    def map(self, fn: Any, items: Any, *, shared: Any = None, cpus: float = 1.0,
            done: Any = None) -> list[Any]:  # fmt: skip
        out = self.inner.map(_with_pid, [(fn, item) for item in items], shared=shared,
                             cpus=cpus, done=done)  # fmt: skip
        self.batches.append(len(items))
        self.pids += [pid for pid, _ in out]
        return [result for _, result in out]


def test_the_best_parameters_retrained_give_the_best_value() -> None:
    frame = _small()
    heard: list[str] = []
    result = search(frame, SMALL, space=SPACE, fixed=FIXED, trials=5, jobs=2, experiment=None,
                    progress=heard.append)  # fmt: skip
    assert [t["number"] for t in result.trials] == [1, 2, 3, 4, 5]
    assert result.best_value == max(t["value"] for t in result.trials)
    # batches of 2, 2 and 1, each reported while it runs, then its trials in order
    running = [m.split(":")[0] for m in heard if m.startswith("running")]
    assert sorted(set(running)) == ["running trial 5 of 5", "running trials 1-2 of 5",
                                    "running trials 3-4 of 5"]  # fmt: skip
    # an independent check: train() itself, with the best parameters, on the same segments
    trained = train(frame, SMALL, params=result.best_params, experiment=None)
    assert trained.metrics["valid"]["rank_ic"] == result.best_value
    best = next(t for t in result.trials if t["value"] == result.best_value)
    assert dumps(best["valid"]) == dumps({k: trained.metrics["valid"][k] for k in best["valid"]})
    assert result.best_params == {**FIXED, **best["params"]}


@pytest.mark.slow
def test_ray_trials_give_the_local_search_bit_for_bit(ray_cluster: Any) -> None:
    frame = _small(seed=1)
    args = {"space": SPACE, "fixed": FIXED, "trials": 6, "jobs": 2, "experiment": None}
    local = search(frame, SMALL, **args)  # type: ignore[arg-type]
    with executor("ray", address=ray_cluster.address) as ray:
        traced = _Traced(ray)
        remote = search(frame, SMALL, executor=traced, **args)  # type: ignore[arg-type]
    assert remote.best_params == local.best_params
    assert remote.best_value == local.best_value
    assert dumps(remote.trials) == dumps(local.trials)  # every number and parameter, exactly
    assert len({json.dumps(t["params"]) for t in local.trials}) == 6  # a batch spreads out
    assert traced.batches == [2, 2, 2] and traced.shares == 1  # the frame went once
    assert len(traced.pids) == 6 and os.getpid() not in traced.pids  # in Ray's workers


def test_no_finite_trial_is_a_one_line_error() -> None:
    # the same label for every instrument on a day: no score can rank it
    frame = _small().with_columns(pl.col("LABEL0").mean().over("date"))
    with pytest.raises(UsageError, match=r"^no trial of 2 gave a finite validation rank_ic: "):
        search(frame, SMALL, model="linear", trials=2, experiment=None)


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"num_leaves": ("int", 32, 4)}, "key 'num_leaves': low 32 is not below high 4"),
        ({"num_leaves": ("int", 4.5, 32)}, "key 'num_leaves': low 4.5 is not a whole number"),
        ({"learning_rate": ("float", 0.0, 0.3, "log")}, "key 'learning_rate': a log range needs "
                                                        "low above 0, not 0.0"),
        ({"learning_rate": ("uniform", 0.0, 0.3)}, "key 'learning_rate': kind 'uniform' is not "
                                                   "float, int or choice"),
        ({"learning_rate": ("float", 0.01, 0.3, "ln")}, r"key 'learning_rate': write "
                                                        r"\[float, LOW, HIGH\] or"),
        ({"boosting": ("choice", [])}, r"key 'boosting': write \[choice, \[A, B, ...\]\]"),
        ({"num_leafs": ("int", 4, 32)}, "key 'num_leafs': unknown lightgbm parameter .* "
                                        "did you mean num_leaves"),
        ({"num_leaves": ("int", 1, 32)}, "key 'num_leaves': lightgbm parameter num_leaves: 1"),
        ({"num_boost_round": ("int", 10, 20)}, "key 'num_boost_round' is also a fixed parameter"),
    ],
)  # fmt: skip
def test_a_bad_space_is_refused_before_anything_runs(space: Any, expected: str) -> None:
    with pytest.raises(UsageError, match=f"^search space {expected}"):
        search(_small(instruments=2, days=3), SMALL, space=space, fixed=FIXED, experiment=None)
    with pytest.raises(UsageError, match=r"^the search space is empty"):
        search(_small(instruments=2, days=3), SMALL, space={}, experiment=None)


def test_bad_model_metric_and_segments_are_refused_up_front() -> None:
    frame = _small(instruments=4, days=200)
    with pytest.raises(UsageError, match="unknown model 'lgbm'; did you mean lightgbm"):
        search(frame, SMALL, model="lgbm", experiment=None)
    with pytest.raises(UsageError, match="metric 'sharpe': choose one of rank_ic, ic"):
        search(frame, SMALL, metric="sharpe", experiment=None)
    with pytest.raises(UsageError, match="no default search space for model 'mlp'"):
        search(frame, SMALL, model="mlp", experiment=None)
    close = Segments.parse({"train": "2020-01-01:2020-06-30", "valid": "2020-07-01:2020-07-20",
                            "test": "2020-08-01:2020-08-20"})  # fmt: skip
    # 2020-06-30 and 2020-07-01 are consecutive days of the frame: no room for a 2-day label
    with pytest.raises(LookaheadError, match=r"train \(2020-01-01:2020-06-30\) and valid .* "
                                             r"have 0 trading day\(s\) between them.*"
                                             r"end train on or before 2020-06-28"):  # fmt: skip
        search(frame, close, space=SPACE, experiment=None)
