"""The `quarry search` command-line contract: search.json and params.yaml that `quarry train`
reproduces, --json, one-line errors for a bad space file, model or segment, and --help."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.cli.helpers import parse_json, run

LABEL = "Ref($close, -2)/Ref($close, -1) - 1"
SEGMENTS = ["--train", "2015-01-02:2015-09-30", "--valid", "2015-10-06:2015-12-31"]
SPACE = "num_leaves: [int, 4, 16]\nlearning_rate: [float, 0.05, 0.3, log]\n"
FIXED = "num_boost_round: 20\nlambda_l1: 1.0\nlambda_l2: 1.0\n"


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search")
    store, out = root / "store", root / "features.parquet"
    assert run("data", "generate", "--store", str(store), "--instruments", "40",
               "--days", "300", "--alpha-ic", "0.1")[0] == 0  # fmt: skip
    code, _, err = run(
        "features", "compute", "--store", str(store), "--no-cache", "--label", LABEL,
        "--expr", "ROC5=Ref($close, 5)/$close", "--expr", "STD10=Std($close, 10)/$close",
        "--expr", "MA5=Mean($close, 5)/$close", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    return out


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    space, fixed = tmp_path / "space.yaml", tmp_path / "fixed.yaml"
    space.write_text(SPACE)
    fixed.write_text(FIXED)
    return {"space": space, "fixed": fixed}


def _search(features: Path, files: dict[str, Path], *extra: str) -> tuple[int, str, str]:
    return run(
        "search", "--features", str(features), *SEGMENTS, "--space", str(files["space"]),
        "--params", str(files["fixed"]), "--trials", "4", "--jobs", "2", *extra,
    )  # fmt: skip


def test_the_best_parameters_written_retrain_to_the_recorded_value(
    features: Path, files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "search"
    code, stdout, err = _search(features, files, "--out", str(out), "--json")
    assert code == 0, err
    report = json.loads((out / "search.json").read_text())
    assert parse_json(stdout) == report  # --json prints what the file holds
    assert [m.split(":")[0] for m in err.splitlines() if m.startswith("trial ")] == [
        f"trial {k}/4" for k in range(1, 5)
    ]
    values = [t["value"] for t in report["trials"]]
    assert [t["number"] for t in report["trials"]] == [1, 2, 3, 4]
    assert report["best_value"] == max(values)
    assert report["best_params"]["num_boost_round"] == 20
    assert set(report["best_params"]) == {"num_boost_round", "lambda_l1", "lambda_l2",
                                          "num_leaves", "learning_rate"}  # fmt: skip
    assert report["jobs"] == 2 and report["horizon"] == 2  # the horizon from the file's label

    # an independent check: quarry train with the written parameters scores valid the same
    code, _, err = run(
        "train", "--features", str(features), *SEGMENTS, "--test", "2016-01-06:2016-02-29",
        "--params", str(out / "params.yaml"), "--out", str(tmp_path / "train"),
    )  # fmt: skip
    assert code == 0, err
    metrics = json.loads((tmp_path / "train" / "metrics.json").read_text())
    assert metrics["valid"]["rank_ic"] == report["best_value"]


def test_human_output_is_a_table_of_the_best_trials(features: Path, tmp_path: Path) -> None:
    code, stdout, err = run(
        "search", "--features", str(features), *SEGMENTS, "--model", "linear", "--trials", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "best 2 of 2 trials" in stdout
    header = next(line for line in stdout.splitlines() if "trial" in line and "rank_ic" in line)
    assert header.split("┃")[1:4] == [" trial ", " rank_ic ", "  kind "]
    assert "best: trial" in stdout and "mlflow run id:" in stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("num_leaves: [int, 4, 16]\nlearning_rate: [float, 0.3, 0.05]\n",
         "line 2: search space key 'learning_rate': low 0.3 is not below high 0.05"),
        ("num_leafs: [int, 4, 16]\n",
         "line 1: search space key 'num_leafs': unknown lightgbm parameter 'num_leafs'; "
         "did you mean num_leaves?"),
        ("num_leaves: [integer, 4, 16]\n",
         "line 1: search space key 'num_leaves': kind 'integer' is not float, int or choice"),
        ("num_boost_round: [int, 10, 50]\n",
         "line 1: search space key 'num_boost_round' is also a fixed parameter"),
        ("- num_leaves\n", "a search space is a mapping of 'name: [kind, ...]' lines"),
    ],
)  # fmt: skip
def test_a_bad_space_file_is_one_line_naming_the_file_and_key(
    features: Path, files: dict[str, Path], text: str, expected: str
) -> None:
    files["space"].write_text(text)
    code, stdout, err = _search(features, files)
    assert code == 1 and stdout == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: {files['space']}: {expected}"), err


VALID = "2015-10-06:2015-12-31"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--model", "lgbm", "--valid", VALID], "unknown model 'lgbm'; did you mean lightgbm?"),
        (["--valid", "2015-10-06:2015-13-31"], "segment valid: '2015-13-31' is not a date"),
        (["--valid", "2015-10-01:2015-12-31"], "train (2015-01-02:2015-09-30) and valid "
                                               "(2015-10-01:2015-12-31) have 0 trading day(s)"),
        (["--metric", "sharpe", "--valid", VALID], "--metric 'sharpe': choose one of rank_ic"),
        (["--model", "mlp", "--valid", VALID], "no default search space for model 'mlp': give "
                                               "one with --space"),
    ],
)  # fmt: skip
def test_bad_model_segments_and_metric_are_one_line(
    features: Path, args: list[str], expected: str
) -> None:
    code, _, err = run("search", "--features", str(features), "--train",
                       "2015-01-02:2015-09-30", *args, "--trials", "1")  # fmt: skip
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and expected in err, err


def test_no_finite_trial_is_one_line(features: Path, tmp_path: Path) -> None:
    # the same label for every instrument on a day: no model can rank it
    flat = tmp_path / "flat.parquet"
    pl.read_parquet(features).with_columns(pl.col("LABEL0").mean().over("date")).write_parquet(flat)
    code, _, err = run("search", "--features", str(flat), *SEGMENTS, "--model", "linear",
                       "--trials", "2", "--experiment", "flat")  # fmt: skip
    assert code == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert errors[0].startswith("error: no trial of 2 gave a finite validation rank_ic")
    assert "check the label varies across instruments" in errors[0]
    assert "trial 2/2: rank_ic undefined, best undefined" in err


def test_help_teaches_with_examples() -> None:
    code, stdout, _ = run("search", "--help", columns=100)
    assert code == 0
    assert "Examples:" in stdout
    assert "quarry search --features f.parquet --train" in stdout
    assert "learning_rate: [float, 0.01, 0.3, log]" in stdout
    assert "--executor ray --ray-address auto" in stdout
    assert "--params runs/search/params.yaml" in stdout  # how to train the best parameters


@pytest.mark.slow
def test_ray_executor_writes_the_same_search(
    features: Path, files: dict[str, Path], tmp_path: Path, ray_cluster: Any
) -> None:
    reports = []
    for name, extra in (("local", []), ("ray", ["--ray-address", ray_cluster.address])):
        code, stdout, err = _search(features, files, "--executor", name, *extra, "--json")
        assert code == 0, err
        reports.append(parse_json(stdout))
    local, ray = reports
    assert ray["executor"] == "ray"
    for key in ("best_params", "best_value", "best_trial", "trials"):
        assert ray[key] == local[key], key
