"""Model metadata: the JSON Schema kept in the repository (held to jsonschema's reading of
it), checked when a version is registered, stored with the version and read back; and a
workflow's version carries what made it: the file's digest, the store's commits, the
training window, its run's metrics."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import mlflow
import polars as pl
import pytest

import quarry.tracking
from quarry._json import dumps
from quarry.data import Store, generate, ingest_frame, read_bars, table_spec
from quarry.exceptions import DataError, UsageError
from quarry.tracking import (
    client,
    describe_model,
    experiment_id,
    load_packaged,
    metadata_schema,
    model_metadata,
    quiet_mlflow,
    register,
    sync_metrics,
    validate_metadata,
)
from quarry.tracking._metadata import _check_keywords, _problems
from quarry.workflows import StepCache, Workflow, load_workflow, run_workflow
from tests.cli.helpers import parse_json, run
from tests.tracking.helpers import given_metadata
from tests.workflows.helpers import MOMENTUM, NOISE, REVERSAL, small_spec, write_spec

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = Path(quarry.tracking.__file__).parent / "model_metadata.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
REFERENCE = jsonschema.Draft202012Validator(SCHEMA)


def _record(**changes: Any) -> dict[str, Any]:
    """A complete record, as ``model_metadata`` returns one."""
    full = {"metadata_version": 1, "name": "alpha", "version": 3, "run_id": "0123abcd",
            "metrics": {"test_rank_ic": 0.041, "valid_ic": None}, **given_metadata()}  # fmt: skip
    return {**full, **changes}


def _reference_places(record: dict[str, Any]) -> set[tuple[Any, ...]]:
    """Where jsonschema finds the record wrong: a missing or unexpected field at its own
    place, any other problem at the value's."""
    places = set()
    for error in REFERENCE.iter_errors(record):
        path = tuple(error.absolute_path)
        if error.validator == "required":
            found = re.match(r"'(.+)' is a required property", error.message)
            assert found is not None
            places.add((*path, found.group(1)))
        elif error.validator == "additionalProperties":
            unexpected = error.message.split("(", 1)[1]
            places |= {(*path, key) for key in re.findall(r"'([^']+)'", unexpected)}
        else:
            places.add(path)
    return places


def _our_places(record: dict[str, Any]) -> set[tuple[Any, ...]]:
    return {place for place, _ in _problems(metadata_schema(), json.loads(dumps(record)), ())}


# -- the schema ----------------------------------------------------------------------------------


def test_the_schema_is_draft_2020_12_and_a_full_record_passes() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert metadata_schema() == SCHEMA  # what Quarry checks against is the file
    record = _record()
    assert list(REFERENCE.iter_errors(record)) == []
    assert validate_metadata(record) == record


def test_the_schema_ships_with_the_package_and_in_the_docs() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"tracking/model_metadata.schema.json"' in pyproject
    docs = json.loads((ROOT / "docs" / "reference" / "model-metadata.schema.json").read_text())
    assert docs == SCHEMA
    # a keyword the interpreter does not check cannot slip into the schema
    with pytest.raises(RuntimeError, match="oneOf"):
        _check_keywords({"type": "object", "properties": {"x": {"oneOf": []}}}, "")


@pytest.mark.parametrize("field", SCHEMA["required"])
def test_each_required_field_missing_is_refused_by_name(field: str) -> None:
    record = _record()
    del record[field]
    assert _reference_places(record) == {(field,)}
    with pytest.raises(UsageError) as info:
        validate_metadata(record)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"model metadata: missing {field} (")
    where = {"description": "tracking.description", "authors": "tracking.authors",
             "licence": "tracking.licence", "project": "tracking.project"}  # fmt: skip
    if field in where:
        assert f"in the workflow file: {where[field]};" in message
    assert "quarry.tracking.register" in message


def test_every_missing_field_is_named_in_one_line() -> None:
    record = _record()
    for field in ("description", "licence", "training_window"):
        del record[field]
    with pytest.raises(UsageError) as info:
        validate_metadata(record, subject="model metadata of alpha")
    assert str(info.value) == (
        "model metadata of alpha: missing description, licence, training_window (in the "
        "workflow file: tracking.description, tracking.licence; from Python: in the metadata "
        "passed to quarry.tracking.register)"
    )


def _set(path: str, value: Any) -> Any:
    """A change of one value of the record, at a dotted path (``features.0.name``)."""

    def change(record: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = record
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _drop(path: str) -> Any:
    def change(record: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = record
        for part in parents:
            node = node[part]
        del node[last]

    return change


CASES = {
    "empty description": _set("description", ""),
    "blank description": _set("description", "   "),
    "no authors": _set("authors", []),
    "a blank author": _set("authors", ["ana", " "]),
    "authors as text": _set("authors", "ana"),
    "licence null": _set("licence", None),
    "version 0": _set("version", 0),
    "version 3.0 (an integer to JSON)": _set("version", 3.0),
    "version true": _set("version", True),
    "version as text": _set("version", "3"),
    "metadata_version 2": _set("metadata_version", 2),
    "a project with a space": _set("project", "my project"),
    "a project starting with -": _set("project", "-x"),
    "a project of 100 characters": _set("project", "p" * 100),
    "a project of 101 characters": _set("project", "p" * 101),
    "no features": _set("features", []),
    "a feature without expression": _set("features", [{"name": "A"}]),
    "a feature with more": _set("features.0", {"name": "A", "expression": "$close", "x": 1}),
    "an empty feature name": _set("features.1.name", ""),
    "a window date not ISO": _set("training_window.start", "2020-1-1"),
    "a window without end": _drop("training_window.end"),
    "data without commits": _drop("data.commits"),
    "a commit version below 0": _set("data.commits.bars.version", -1),
    "a commit without time": _drop("data.commits.bars.committed_at"),
    "a commit as text": _set("data.commits.bars", "bars@3"),
    "a commit time with a space": _set("data.commits.bars.committed_at", "2020-07-01 18:00:00"),
    "a commit time in Z": _set("data.commits.bars.committed_at", "2020-07-01T18:00:00Z"),
    "as_of a number": _set("data.as_of", 5),
    "a metric as text": _set("metrics", {"ic": "high"}),
    "a metric true": _set("metrics", {"ic": True}),
    "metrics empty": _set("metrics", {}),
    "a digest in capitals": _set("workflow.sha256", "A" * 64),
    "a digest too short": _set("workflow.sha256", "0" * 63),
    "a workflow without path": _drop("workflow.path"),
    "a field the schema lacks": _set("owner", "ana"),
    "an empty model type": _set("model_type", ""),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_checks_are_jsonschemas_own(case: str) -> None:
    record = copy.deepcopy(_record())
    CASES[case](record)
    expected = _reference_places(record)
    assert _our_places(record) == expected
    if expected:
        with pytest.raises(UsageError) as info:
            validate_metadata(record)
        assert "\n" not in str(info.value)
    else:
        validate_metadata(record)


# -- registering and reading back ----------------------------------------------------------------


def _logged_run(metrics: dict[str, float]) -> str:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    with mlflow.start_run(experiment_id=experiment_id("metadata")) as run, quiet_mlflow():
        mlflow.log_metrics(metrics)
        mlflow.sklearn.log_model(model, name="model", pip_requirements=[])
    return str(run.info.run_id)


def _run_metrics(run_id: str) -> dict[str, float | None]:
    metrics = client().get_run(run_id).data.metrics
    return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


def test_a_version_is_registered_with_its_metadata_and_read_back() -> None:
    run_id = _logged_run({"test_rank_ic": 0.031, "valid_ic": 0.02})
    given = given_metadata()
    version = register(run_id, "alpha", given)
    assert version == 1
    found = model_metadata("alpha", version)
    metrics = {"test_rank_ic": 0.031, "valid_ic": 0.02}
    assert found == {"metadata_version": 1, "name": "alpha", "version": 1, **given,
                     "run_id": run_id, "metrics": metrics}  # fmt: skip
    # stored as the version's tag, without the registry's own keys
    stored = json.loads(client().get_model_version("alpha", "1").tags["quarry.metadata"])
    assert stored == {k: v for k, v in found.items() if k not in ("name", "version")}
    assert client().get_registered_model("alpha").tags["quarry.project"] == "research"
    detail = describe_model("alpha")
    assert detail.project == "research" and detail.versions[0].metadata == found
    assert detail.to_dict()["versions"][0]["metadata"] == found

    # more figures logged to the run (a workflow's backtest): the metadata follows
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({"backtest_sharpe": 1.5, "test_rank_ic": 0.035})
    assert sync_metrics("alpha", version) is True
    assert model_metadata("alpha", version)["metrics"] == _run_metrics(run_id)
    assert model_metadata("alpha", version)["metrics"]["backtest_sharpe"] == 1.5
    assert sync_metrics("alpha", version) is False  # nothing new


def test_a_model_without_a_description_is_refused_and_nothing_registered() -> None:
    run_id = _logged_run({"test_ic": 0.01})
    with pytest.raises(UsageError) as info:
        register(run_id, "beta", given_metadata(description=None, authors=None))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("model metadata of beta: missing description, authors (")
    assert "tracking.description" in message and "tracking.authors" in message
    assert [m.name for m in client().search_registered_models()] == []
    with pytest.raises(UsageError, match=r"leave run_id, metrics out of the metadata"):
        register(run_id, "beta", given_metadata(run_id="x", metrics={"ic": 1.0}))
    with pytest.raises(UsageError, match=r"metadata of beta: workflow\.sha256 should match"):
        register(run_id, "beta", given_metadata(workflow={"path": "/w.yaml", "sha256": "abc"}))
    assert [m.name for m in client().search_registered_models()] == []


def test_a_model_stays_in_its_project() -> None:
    run_id = _logged_run({"test_ic": 0.01})
    assert register(run_id, "gamma", given_metadata(project=None)) == 1
    assert model_metadata("gamma", 1)["project"] == "default"
    with pytest.raises(UsageError, match="model gamma belongs to project 'default', not 'desk'"):
        register(run_id, "gamma", given_metadata(project="desk"))
    assert [v.version for v in describe_model("gamma").versions] == [1]


def test_reading_metadata_that_is_not_there_names_what_is(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no registered model 'delta'"):
        model_metadata("delta", 1)
    registry = client()
    registry.create_registered_model("delta")
    registry.create_model_version("delta", source=tmp_path.as_uri())  # outside Quarry
    with pytest.raises(UsageError, match=r"model delta has no version 4 \(versions: 1\)"):
        model_metadata("delta", 4)
    with pytest.raises(UsageError, match="model delta version 1 has no metadata"):
        model_metadata("delta", 1)
    assert describe_model("delta").versions[0].metadata is None
    assert sync_metrics("delta", 1) is False
    registry.set_model_version_tag("delta", "1", "quarry.metadata", json.dumps({"licence": 1}))
    with pytest.raises(DataError, match=r"model delta version 1: its metadata .* is damaged"):
        model_metadata("delta", 1)


# -- a workflow's version ------------------------------------------------------------------------


def test_a_workflow_that_registers_needs_a_description(tmp_path: Path) -> None:
    spec = small_spec(tmp_path / "store")
    del spec["tracking"]["description"]
    path = write_spec(tmp_path / "w.yaml", spec)
    with pytest.raises(UsageError) as info:
        load_workflow(path)
    (line,) = info.value.lines()
    assert line.startswith(f"{path}: tracking.description: required to register the model")
    code, out, err = run("run", str(path), "--out", str(tmp_path / "o"))
    assert (code, out) == (1, "")
    assert len(err.strip().splitlines()) == 1 and "tracking.description" in err
    # without register, none is needed; with it, a workflow made in code has no file to name
    del spec["tracking"]["register"]
    load_workflow(write_spec(tmp_path / "w2.yaml", spec))
    made = Workflow.model_validate(small_spec(tmp_path / "store"))
    assert made.source is None
    with pytest.raises(UsageError, match=r"tracking\.register: a model's metadata names the work"):
        run_workflow(made, tmp_path / "o")


def test_the_train_key_of_a_workflow_without_metadata_settings_is_unchanged() -> None:
    from quarry.workflows._run import _tracking_key

    bare = {"register": None, "description": None}
    plain = Workflow.model_validate(small_spec(Path("s"), tracking=bare))
    assert _tracking_key(plain) == {"experiment": "small", "registered": None}
    given = small_spec(Path("s"), tracking={"authors": ["ana"], "licence": "MIT"})
    assert _tracking_key(Workflow.model_validate(given)) == {
        "experiment": "small", "registered": "small", "authors": ["ana"], "licence": "MIT",
        "description": "The small workflow's model, for the tests."}  # fmt: skip


def _newest(store: Store, table: str) -> dict[str, Any] | None:
    commits = store.commits(table)
    if not commits:
        return None
    last = max(commits, key=lambda c: c.version)
    return {"version": last.version, "committed_at": last.committed_at.isoformat()}


@pytest.mark.slow
def test_a_workflow_registers_its_version_with_what_made_it(tmp_path: Path) -> None:
    store_path = tmp_path / "store"
    store = Store(store_path)
    generate(store, 60, 300, seed=5, alpha_ic=0.15)
    spec = small_spec(store_path, tracking={"authors": ["ana"], "project": "research"})
    path = write_spec(tmp_path / "w.yaml", spec)
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = StepCache(tmp_path / "steps")
    first = run_workflow(load_workflow(path), tmp_path / "o1", cache=cache)
    version = first.results["model_version"]
    meta = model_metadata("small", version)

    assert meta["workflow"] == {"path": str(path), "sha256": sha256}
    tables = ("bars", "corporate_actions", "fundamentals")
    assert meta["data"] == {"store": str(store_path), "as_of": None, "universe": None,
                            "commits": {t: _newest(store, t) for t in tables}}  # fmt: skip
    assert meta["data"]["commits"]["bars"] is not None
    assert meta["training_window"] == {"start": "2015-01-02", "end": "2015-08-31"}
    columns = load_packaged("small", version).columns
    expressions = {"NOISE": NOISE, "REV5": REVERSAL, "MOM20": MOMENTUM}
    assert [(f["name"], f["expression"]) for f in meta["features"]] == [
        (c, expressions[c]) for c in columns]  # fmt: skip
    assert sorted(columns) == sorted(expressions)
    # the run's metrics as MLflow has them, the backtest's and the gate's included
    assert meta["metrics"] == _run_metrics(first.results["mlflow_run_id"])
    assert "backtest_sharpe" in meta["metrics"] and "test_rank_ic" in meta["metrics"]
    assert (meta["authors"], meta["project"], meta["licence"]) == (["ana"], "research",
                                                                   "proprietary")  # fmt: skip
    assert meta["description"] == "The small workflow's model, for the tests."
    assert (meta["model_type"], meta["run_id"]) == ("lightgbm", first.results["mlflow_run_id"])

    code, out, _ = run("models", "show", "small", "--json")
    assert code == 0
    assert parse_json(out)["versions"][0]["metadata"] == meta
    code, out, _ = run("models", "show", "small", "--version", str(version), "--json")
    assert (code, parse_json(out)) == (0, meta)
    code, out, _ = run("models", "show", "small")
    assert code == 0
    assert "The small workflow's model, for the tests." in out and "(project research)" in out
    assert sha256[:16] in out and "2015-01-02 to 2015-08-31" in out

    # a vendor correction: the features and the training run again, and the new version
    # names the bars commit that made it
    bar = read_bars(store, ["open", "high", "low", "close", "volume"]).row(5000, named=True)
    fixed = pl.DataFrame([{**bar, "close": bar["close"] * 1.01,
                           "high": max(bar["high"], bar["close"] * 1.01)}])  # fmt: skip
    ingest_frame(store, table_spec("bars"), fixed)
    second = run_workflow(load_workflow(path), tmp_path / "o2", cache=cache)
    assert second.steps["train"] == "ran"
    newer = model_metadata("small", second.results["model_version"])
    assert newer["data"]["commits"]["bars"] == _newest(store, "bars")
    assert newer["data"]["commits"]["bars"]["version"] > meta["data"]["commits"]["bars"]["version"]
