"""The model registry: versions, and aliases that move (not the deprecated stages)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from quarry.tracking import alias_version, experiment_id, register, set_alias, tracking_uri


def _logged_run() -> str:
    from sklearn.linear_model import LinearRegression

    from quarry.models._estimators import _quiet_mlflow

    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    with mlflow.start_run(experiment_id=experiment_id("registry-test")) as run, _quiet_mlflow():
        mlflow.sklearn.log_model(model, name="model")
    return str(run.info.run_id)


def test_versions_and_moving_aliases(tmp_path: Path) -> None:
    assert tracking_uri().startswith("sqlite:///")
    assert str(tmp_path) in tracking_uri()  # each test has its own QUARRY_HOME
    assert alias_version("alpha", "champion") is None
    first = register(_logged_run(), "alpha")
    second = register(_logged_run(), "alpha")
    assert (first, second) == (1, 2)
    set_alias("alpha", "champion", first)
    set_alias("alpha", "challenger", second)
    assert alias_version("alpha", "champion") == 1
    set_alias("alpha", "champion", second)  # promotion moves the alias
    assert alias_version("alpha", "champion") == 2
    assert alias_version("alpha", "challenger") == 2


def test_a_tracking_server_uri_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'team.db'}")
    assert tracking_uri() == f"sqlite:///{tmp_path / 'team.db'}"


def test_artifacts_never_land_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'team.db'}")
    monkeypatch.chdir(tmp_path)
    run_id = _logged_run()
    assert not (tmp_path / "mlruns").exists()
    artifact_uri = mlflow.get_run(run_id).info.artifact_uri
    assert artifact_uri.startswith((tmp_path / "quarry-home" / "mlartifacts").as_uri())
