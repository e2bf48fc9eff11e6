"""The model registry: versions, and aliases that move (not the deprecated stages)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from quarry.tracking import (
    alias_version,
    client,
    experiment_id,
    move_alias,
    quiet_mlflow,
    register,
    set_alias,
    tracking_uri,
)


def _logged_run() -> str:
    from sklearn.linear_model import LinearRegression

    model = LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0])
    with mlflow.start_run(experiment_id=experiment_id("registry-test")) as run, quiet_mlflow():
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


def test_moving_an_alias_is_compare_and_set_across_threads(tmp_path: Path) -> None:
    """Eight promotions decided against version 1 at once: exactly one moves the alias."""
    from concurrent.futures import ThreadPoolExecutor

    registry = client()
    registry.create_registered_model("beta")
    versions = [
        int(registry.create_model_version("beta", source=tmp_path.as_uri()).version)
        for _ in range(9)
    ]
    set_alias("beta", "champion", versions[0])
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda v: move_alias("beta", "champion", v, expected=1),
                                 versions[1:]))  # fmt: skip
    winners = [v for v, now in zip(versions[1:], outcomes, strict=True) if now is None]
    assert len(winners) == 1
    assert alias_version("beta", "champion") == winners[0]
    assert all(now == winners[0] for now in outcomes if now is not None)
    assert move_alias("beta", "champion", 5, expected=None) == winners[0]  # set: not None
