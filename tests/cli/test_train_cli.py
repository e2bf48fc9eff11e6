"""The `quarry train` command-line contract, with MLflow on a local SQLite database."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.cli.helpers import run

LABEL = "Ref($close, -2)/Ref($close, -1) - 1"
SEGMENTS = [
    "--train", "2015-01-02:2015-09-30",
    "--valid", "2015-10-06:2015-12-31",
    "--test", "2016-01-06:2016-06-30",
]  # fmt: skip


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    store, out = root / "store", root / "features.parquet"
    assert run("data", "generate", "--store", str(store), "--instruments", "40",
               "--days", "400", "--alpha-ic", "0.08")[0] == 0  # fmt: skip
    code, _, err = run(
        "features", "compute", "--store", str(store), "--no-cache", "--label", LABEL,
        "--expr", "ROC5=Ref($close, 5)/$close", "--expr", "STD10=Std($close, 10)/$close",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    return out


def test_train_writes_predictions_metrics_and_an_mlflow_run(features: Path, tmp_path: Path) -> None:
    out = tmp_path / "lgb"
    code, stdout, err = run(
        "train", "--features", str(features), "--model", "linear", *SEGMENTS,
        "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"train", "valid", "test"}
    assert {"ic", "icir", "rank_ic", "rank_icir"} <= set(metrics["test"])
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert predictions.columns == ["instrument", "date", "score"]
    assert str(predictions["date"].min()) >= "2016-01-06"

    import mlflow

    from quarry.tracking import client

    mlflow_run = client().get_run(result["run_id"])
    assert mlflow_run.data.metrics["test_rank_ic"] == pytest.approx(metrics["test"]["rank_ic"])
    assert mlflow_run.data.params["horizon"] == "2"  # read from the file's label
    artifacts = {a.path for a in client().list_artifacts(result["run_id"])}
    assert {"predictions.parquet", "metrics.json", "plots"} <= artifacts
    model = mlflow.pyfunc.load_model(f"runs:/{result['run_id']}/model")
    assert model.metadata.signature is not None


def test_segments_too_close_for_the_label_are_one_line(features: Path, tmp_path: Path) -> None:
    code, _, err = run(
        "train", "--features", str(features),
        "--train", "2015-01-02:2015-09-30", "--valid", "2015-10-01:2015-12-31",
        "--test", "2016-01-06:2016-06-30", "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert code == 1
    assert "overlap" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_segment_text_says_what_to_write(features: Path, tmp_path: Path) -> None:
    code, _, err = run(
        "train", "--features", str(features), "--train", "2015-01-02..2015-09-30",
        "--valid", "2015-10-06:2015-12-31", "--test", "2016-01-06:2016-06-30",
        "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert code == 1 and "train" in err and "START:END" in err
