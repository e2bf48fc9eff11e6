"""A workflow's pieces through an executor: the same walk-forward workflow run locally and as
Ray tasks on a real cluster gives the same figures and predictions bit for bit; the executor
is in no cache key; the search section finds the parameters training then uses; bad
executor settings are one-line errors."""

from __future__ import annotations

import json
import os
import typing
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.data import Store, generate
from quarry.exceptions import UsageError
from quarry.features._outofcore import _BASELINE
from quarry.workflows import StepCache, load_workflow, run_workflow
from quarry.workflows._spec import SearchSpec
from tests.cli.helpers import run
from tests.workflows.helpers import small_spec, write_spec

# Light regularization so that a few rounds learn something on 30 instruments (with Qlib's
# lambdas no tree splits, every score is the same, and equal results would prove little).
PARAMS = {"num_boost_round": 20, "num_leaves": 8, "lambda_l1": 0.0, "lambda_l2": 1.0,
          "min_data_in_leaf": 40}  # fmt: skip
WALK = {"start": "2015-10-01", "end": "2016-02-19", "step": 25, "train_days": 150,
        "valid_days": 30}  # fmt: skip
# A few MB beyond the baseline: the features are computed in several chunks.
MEMORY = str(_BASELINE + 3 * 2**19)
# Figures that say how the run went, not what it found.
RUN_FIELDS = ("steps", "executor", "mlflow_run_id")


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 instruments x 300 days with a planted reversal alpha."""
    store = tmp_path_factory.mktemp("market") / "store"
    generate(Store(store), 30, 300, seed=5, alpha_ic=0.15)
    return store


def _walk_forward(market: Path, **changes: Any) -> dict[str, Any]:
    """Features in chunks, a search of two trials at once, then four windows."""
    fixed = {k: v for k, v in PARAMS.items() if k != "num_leaves"}
    search = {"trials": 2, "jobs": 2, "space": {"num_leaves": ["int", 4, 16]}}
    return small_spec(
        market, segments=None, walk_forward=WALK, model={"params": fixed},
        features={"memory": MEMORY}, tracking={"register": None}, search=search, **changes,
    )  # fmt: skip


@pytest.mark.slow
def test_ray_runs_the_workflow_to_the_same_results_bit_for_bit(
    ray_cluster: Any, market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_spec = load_workflow(write_spec(tmp_path / "local.yaml", _walk_forward(market)))
    ray_file = write_spec(tmp_path / "ray.yaml", _walk_forward(
        market, execution={"executor": "ray", "ray_address": ray_cluster.address}))  # fmt: skip
    ray_spec = load_workflow(ray_file)
    assert local_spec.execution.executor == "local" and ray_spec.execution.executor == "ray"

    heard: list[str] = []
    local = run_workflow(local_spec, tmp_path / "o1", cache=StepCache(tmp_path / "s1"))
    # a home of its own (the feature cache, MLflow): the Ray run computes everything again
    home = os.environ["QUARRY_HOME"]
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "home2"))
    remote = run_workflow(ray_spec, tmp_path / "o2", cache=StepCache(tmp_path / "s2"),
                          progress=heard.append)  # fmt: skip
    assert local.steps == remote.steps == {"features": "ran", "train": "ran", "backtest": "ran"}
    one = json.loads((tmp_path / "o1" / "results.json").read_text())
    two = json.loads((tmp_path / "o2" / "results.json").read_text())
    assert (one["executor"], two["executor"]) == ("local", "ray")
    figures = {k: v for k, v in one.items() if k not in RUN_FIELDS}
    assert figures == {k: v for k, v in two.items() if k not in RUN_FIELDS}
    assert isinstance(one["rank_ic"], float) and one["rank_ic"] > 0  # the model learned
    assert one["search"]["trials"] == 2 and "num_leaves" in one["search"]["best_params"]
    assert_frame_equal(
        pl.read_parquet(tmp_path / "o2" / "predictions.parquet"),
        pl.read_parquet(tmp_path / "o1" / "predictions.parquet"),
        check_exact=True,
    )
    # the pieces: several feature chunks, and every window reported as it finished
    chunks = [m for m in heard if m.startswith("features: features ")]
    assert len(chunks) > 1 and chunks[-1] == "features: features 30/30"
    done = [m for m in heard if m.startswith("window ")]
    assert done == [f"window {n}/{len(done)} done" for n in range(1, len(done) + 1)]
    assert len(done) >= 3

    # no key has the executor: the local run's cache serves the Ray file, starting no Ray
    monkeypatch.setenv("QUARRY_HOME", home)
    again = run_workflow(ray_spec, tmp_path / "o3", cache=StepCache(tmp_path / "s1"))
    assert set(again.steps.values()) == {"cached"}
    assert again.results["executor"] == "ray"
    assert {k: v for k, v in again.results.items() if k not in RUN_FIELDS} == figures


@pytest.mark.slow
def test_the_search_picks_the_parameters_training_uses(market: Path, tmp_path: Path) -> None:
    import mlflow

    from quarry.models import Segments, search
    from quarry.tracking import client

    space = {"num_leaves": ["int", 4, 16], "learning_rate": ["float", 0.05, 0.3, "log"]}
    fixed = {k: v for k, v in PARAMS.items() if k != "num_leaves"}
    spec = load_workflow(write_spec(tmp_path / "s.yaml", small_spec(
        market, model={"params": fixed}, tracking={"register": None},
        search={"trials": 3, "space": space})))  # fmt: skip
    result = run_workflow(spec, tmp_path / "o", cache=StepCache(tmp_path / "s"))
    found = result.results["search"]
    assert found["trials"] == 3 and found["metric"] == "rank_ic"
    # the reference: the search itself on the workflow's features and segments
    features = next((tmp_path / "s" / "features").glob("*/features.parquet"))
    assert spec.segments is not None and spec.search is not None
    assert spec.search.space == space
    # (the file's order of the space's keys, which the sampler's draws follow)
    direct = search(pl.read_parquet(features), Segments.parse(spec.segments),
                    model="lightgbm", space=spec.search.space, fixed=fixed, trials=3,
                    jobs=1, horizon=2, seed=0, experiment=None)  # fmt: skip
    assert found["best_params"] == direct.best_params
    assert found["best_value"] == direct.best_value
    # and the trained model is the one with those parameters (MLflow records them)
    client()
    logged = mlflow.get_run(result.results["mlflow_run_id"]).data.params
    assert int(logged["num_leaves"]) == direct.best_params["num_leaves"]
    assert float(logged["learning_rate"]) == direct.best_params["learning_rate"]


def test_search_and_execution_settings_are_checked_at_load(tmp_path: Path) -> None:
    def problems(**changes: Any) -> str:
        path = write_spec(tmp_path / "w.yaml", small_spec(tmp_path, **changes))
        with pytest.raises(UsageError) as info:
            load_workflow(path)
        return str(info.value)

    said = problems(execution={"executor": "dask"})
    assert "execution.executor" in said and "'local' or 'ray'" in said
    said = problems(execution={"ray_address": "auto"})
    assert "execution.ray_address: only the ray executor reads it" in said
    said = problems(search={"space": {"num_leafs": ["int", 4, 16]}})
    assert "search.space.num_leafs" in said and "num_leaves" in said
    said = problems(search={"space": {"num_leaves": ["int", 16, 4]}})
    assert "search.space.num_leaves" in said
    said = problems(search={"space": {"num_boost_round": ["int", 10, 40]}})
    assert "search.space.num_boost_round" in said and "fixed" in said
    said = problems(model={"type": "mlp", "params": {}}, search={"trials": 2})
    assert "search.space" in said and "no default search space" in said
    said = problems(search={"trials": 0})
    assert "search.trials" in said
    # the search section reads the metrics the search itself maximizes
    from quarry.models import SEARCH_METRICS

    field = SearchSpec.model_fields["metric"].annotation
    assert set(typing.get_args(field)) == set(SEARCH_METRICS)


def test_the_cli_flags_are_shown_and_a_bad_executor_is_one_line(
    market: Path, tmp_path: Path
) -> None:
    code, out, _ = run("run", "--help")
    assert code == 0 and "--executor" in out and "--ray-address" in out
    path = write_spec(tmp_path / "w.yaml", small_spec(market))
    code, _, err = run("run", str(path), "--out", str(tmp_path / "o"), "--executor", "dask")
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "error: --executor 'dask': choose one of local, ray"
    code, _, err = run("run", str(path), "--out", str(tmp_path / "o"), "--ray-address", "auto")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "error: --ray-address goes with --executor ray, not with local"
    )
    assert not (tmp_path / "o").exists()  # refused before any step ran


@pytest.mark.slow
def test_an_unreachable_ray_cluster_is_one_line_naming_where_it_was_given(
    market: Path, tmp_path: Path
) -> None:
    path = write_spec(tmp_path / "w.yaml", small_spec(market))
    code, _, err = run("run", str(path), "--out", str(tmp_path / "o"), "--executor", "ray",
                       "--ray-address", "127.0.0.1:9")  # fmt: skip
    assert code == 1 and "Traceback" not in err
    assert "--ray-address 127.0.0.1:9: cannot reach a Ray cluster there" in err
    in_file = write_spec(tmp_path / "r.yaml", small_spec(
        market, execution={"executor": "ray", "ray_address": "127.0.0.1:9"}))  # fmt: skip
    code, _, err = run("run", str(in_file), "--out", str(tmp_path / "o"))
    assert code == 1
    assert "execution.ray_address 127.0.0.1:9: cannot reach a Ray cluster there" in err


def test_the_flags_replace_the_files_execution_settings(tmp_path: Path) -> None:
    from quarry.workflows._run import _Executor

    def chosen(execution: dict[str, Any], name: str | None, address: str | None) -> Any:
        path = write_spec(tmp_path / "w.yaml", small_spec(tmp_path, execution=execution))
        pieces = _Executor(load_workflow(path), name, address)
        return pieces.name, pieces.address

    in_file = {"executor": "ray", "ray_address": "127.0.0.1:6379"}
    assert chosen({}, None, None) == ("local", None)
    assert chosen(in_file, None, None) == ("ray", "127.0.0.1:6379")
    assert chosen(in_file, None, "auto") == ("ray", "auto")
    assert chosen(in_file, "local", None) == ("local", None)  # the file's address goes too
    # no address anywhere: the executor takes $RAY_ADDRESS, else starts a Ray for the run
    assert chosen({"executor": "ray"}, None, None) == ("ray", None)
    assert chosen({}, "ray", None) == ("ray", None)
    with pytest.raises(UsageError, match="--ray-address goes with --executor ray"):
        chosen(in_file, "local", "auto")
