"""MLflow's tracking database and artifacts backed up from one QUARRY_HOME and restored
into another, the first one gone: the run, its parameter and its artifact are there."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import mlflow
import pytest

from quarry.tracking import experiment_id
from tests.cli.helpers import run


@pytest.mark.service
def test_a_run_its_param_and_its_artifact_come_back_in_a_new_home(
    tmp_path: Path, s3_env: dict[str, str]
) -> None:
    home = Path(os.environ["QUARRY_HOME"])  # each test's own (tests/conftest.py)
    with mlflow.start_run(experiment_id=experiment_id("backups")) as logged:
        mlflow.log_param("alpha", "0.25")
        mlflow.log_text("what the run wrote", "notes/hello.txt")
    run_id = logged.info.run_id
    assert (home / "mlartifacts").is_dir()
    to = f"s3://{s3_env['bucket']}/tracking"

    code, out, err = run("admin", "backup", "--to", to, "--json")
    assert code == 0, err
    made = json.loads(out)
    assert set(made["parts"]) == {"tracking", "artifacts"}
    assert made["parts"]["tracking"]["kind"] == "sqlite"
    assert made["parts"]["tracking"]["artifact_root"] == (home / "mlartifacts").as_uri()
    assert made["parts"]["artifacts"]["files"] == 1
    assert made["skipped"] == {"jobs": f"no job database at {home / 'jobs.db'}"}

    shutil.rmtree(home)  # the machine is gone: nothing may be read from the old home
    new_home = tmp_path / "new-home"
    code, out, err = run("admin", "restore", "--from", to, "--home", str(new_home), "--json")
    assert code == 0, err
    done = json.loads(out)
    assert done["targets"] == {
        "tracking": f"sqlite:///{new_home / 'mlflow.db'}",
        "artifacts": str(new_home / "mlartifacts"),
    }
    assert done["rebased_artifact_locations"] == 2  # the experiment and the run

    restored = mlflow.MlflowClient(f"sqlite:///{new_home / 'mlflow.db'}")
    got = restored.get_run(run_id)
    assert got.data.params == {"alpha": "0.25"}
    assert got.info.artifact_uri.startswith((new_home / "mlartifacts").as_uri() + "/")
    assert [a.path for a in restored.list_artifacts(run_id, "notes")] == ["notes/hello.txt"]
    fetched = restored.download_artifacts(run_id, "notes/hello.txt", str(tmp_path))
    assert Path(fetched).read_text() == "what the run wrote"
    assert not home.exists()
