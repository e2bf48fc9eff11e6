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


def _compute(store: Path, out: Path) -> Path:
    """The two features and the label of these tests, from ``store`` into ``out``."""
    code, _, err = run(
        "features", "compute", "--store", str(store), "--no-cache", "--label", LABEL,
        "--expr", "ROC5=Ref($close, 5)/$close", "--expr", "STD10=Std($close, 10)/$close",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    store = root / "store"
    assert run("data", "generate", "--store", str(store), "--instruments", "40",
               "--days", "400", "--alpha-ic", "0.08")[0] == 0  # fmt: skip
    return _compute(store, root / "features.parquet")


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
    # the model carries how its features were made, from the file's metadata
    recipe = model.unwrap_python_model().packaged.recipe
    assert recipe.features == {"ROC5": "(Ref($close, 5) / $close)",
                               "STD10": "(Std($close, 10) / $close)"}  # fmt: skip
    assert recipe.label == "((Ref($close, -2) / Ref($close, -1)) - 1)"
    frame = pl.read_parquet(features).filter(pl.col("date") >= pl.date(2016, 1, 6))
    scores = model.predict(frame.drop("LABEL0").to_pandas())
    assert list(scores[:5]) == pytest.approx(predictions.sort("instrument", "date")["score"][:5])


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


def _one_line_error(code: int, err: str) -> str:
    assert code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _bad_features(kind: str, features: Path, root: Path) -> Path:
    frame = pl.read_parquet(features)
    if kind == "csv":
        frame.write_csv(root / "features.csv")
        return root / "features.csv"
    if kind == "text named .parquet":
        (root / "notes.parquet").write_text("instrument,date\nA,2015-01-02\n")
        return root / "notes.parquet"
    if kind == "parquet named .arrow":
        frame.write_parquet(root / "features.arrow")
        return root / "features.arrow"
    if kind == "empty folder":
        (root / "parts").mkdir()
        (root / "parts" / "readme.txt").write_text("no parquet here")
        return root / "parts"
    if kind == "no date column":
        frame.drop("date").write_parquet(root / "nodate.parquet")
        return root / "nodate.parquet"
    if kind == "text dates":
        frame.with_columns(pl.col("date").cast(pl.String)).write_parquet(root / "text.parquet")
        return root / "text.parquet"
    assert kind == "missing"
    return root / "missing.parquet"


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("csv", "not a Parquet file"),
        ("text named .parquet", "not a Parquet file"),
        ("parquet named .arrow", "not an Arrow IPC file"),
        ("empty folder", "no .parquet files in the folder"),
        ("no date column", "no 'date' column"),
        ("text dates", "the date column holds text (String, e.g. '2015-01-02'), not dates"),
        ("missing", "no such file or folder"),
    ],
)
def test_features_that_are_not_a_features_parquet_are_one_line(
    features: Path, tmp_path: Path, kind: str, expected: str
) -> None:
    path = _bad_features(kind, features, tmp_path)
    code, _, err = run(
        "train", "--features", str(path), "--model", "linear", *SEGMENTS,
        "--out", str(tmp_path / "x"),
    )  # fmt: skip
    line = _one_line_error(code, err)
    assert f"error: {path}: {expected}" in line, line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("learning_rate: -1", "lightgbm parameter learning_rate: -1 is refused by LightGBM: "
                              "it must be > 0.0"),
        ("num_leaves: 0", "lightgbm parameter num_leaves: 0 is refused by LightGBM: "
                          "it must be > 1"),
        ("max_depth: abc", "lightgbm parameter max_depth: 'abc' is refused by LightGBM"),
        ("num_leafs: 31", "unknown lightgbm parameter 'num_leafs'; did you mean num_leaves?"),
    ],
)  # fmt: skip
def test_model_parameters_lightgbm_refuses_are_one_line(
    features: Path, tmp_path: Path, yaml: str, expected: str
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml + "\n")
    code, _, err = run(
        "train", "--features", str(features), "--params", str(params), *SEGMENTS,
        "--out", str(tmp_path / "x"),
    )  # fmt: skip
    line = _one_line_error(code, err)
    assert f"error: {params}: {expected}" in line, line
    assert not (tmp_path / "x").exists()  # refused before reading or training


@pytest.fixture(scope="module")
def constant_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Features that never vary: no model can rank instruments with them."""
    import numpy as np

    days = pl.date_range(pl.date(2015, 1, 1), pl.date(2016, 6, 30), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    rng = np.random.default_rng(5)
    frame = pl.DataFrame(
        {
            "instrument": np.repeat([f"I{i}" for i in range(30)], len(days)),
            "date": pl.concat([days] * 30),
            "F1": 1.0,
            "F2": 2.0,
            "LABEL0": rng.normal(0, 0.02, 30 * len(days)),
        }
    )
    path = tmp_path_factory.mktemp("flat") / "features.parquet"
    frame.write_parquet(path)
    return path


def _refuse_nan(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_json_output_writes_null_for_undefined_figures_and_warns_once(
    constant_features: Path, tmp_path: Path
) -> None:
    code, stdout, err = run(
        "train", "--features", str(constant_features), *SEGMENTS,
        "--out", str(tmp_path / "flat"), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout, parse_constant=_refuse_nan)  # NaN or Infinity fails here
    assert result["constant"] is True
    for segment in ("train", "valid", "test"):
        assert result["metrics"][segment]["ic"] is None
        assert result["metrics"][segment]["constant"] is True
    assert err.count("learned nothing") == 1 and err.startswith("warning:")
    written = json.loads((tmp_path / "flat" / "metrics.json").read_text())
    assert written["test"]["constant"] is True and written["test"]["rank_ic"] is None


def test_a_model_that_learned_nothing_says_so_instead_of_printing_nan(
    constant_features: Path, tmp_path: Path
) -> None:
    code, stdout, err = run(
        "train", "--features", str(constant_features), "--model", "linear", *SEGMENTS,
        "--out", str(tmp_path / "flat"),
    )  # fmt: skip
    assert code == 0, err
    assert "nan" not in stdout.lower() and "ic     n/a" in stdout
    assert err.count("warning: the model learned nothing") == 1


def test_features_written_as_arrow_train_the_same_model_as_parquet(
    features: Path, tmp_path: Path
) -> None:
    """FILE.arrow from quarry features compute (Arrow IPC) carries the same rows, values and
    recipe as FILE.parquet: training on either gives the same predictions and the same
    label horizon, read from the file's metadata."""
    arrow = _compute(features.parent / "store", tmp_path / "features.arrow")
    assert pl.read_ipc(arrow).equals(pl.read_parquet(features))
    results = {}
    for name, path in (("parquet", features), ("arrow", arrow)):
        out = tmp_path / name
        code, stdout, err = run(
            "train", "--features", str(path), "--model", "linear", *SEGMENTS,
            "--out", str(out), "--json",
        )  # fmt: skip
        assert code == 0, err
        results[name] = (pl.read_parquet(out / "predictions.parquet"), json.loads(stdout))
    assert results["arrow"][0].equals(results["parquet"][0])
    from quarry.tracking import client

    params = [client().get_run(r[1]["run_id"]).data.params for r in results.values()]
    assert params[0]["horizon"] == params[1]["horizon"] == "2"
