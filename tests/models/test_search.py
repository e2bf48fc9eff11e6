"""Hyperparameter search: a shared budget over parallel processes, nested MLflow runs, and
the best trial's parameters returned."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarry.models import search
from quarry.tracking import client
from tests.models.helpers import SEGMENTS, feature_frame


@pytest.mark.slow
def test_parallel_trials_share_the_budget_and_nest_under_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    frame = feature_frame(tmp_path, 0.08, 11)
    space = {"learning_rate": ("float", 0.02, 0.3, "log"), "num_leaves": ("int", 4, 64)}
    result = search(
        frame, SEGMENTS, space=space, fixed={"num_boost_round": 30}, trials=6, jobs=2,
        experiment="search-test",
    )  # fmt: skip
    assert len(result.trials) == 6  # the budget is shared, not per process
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
