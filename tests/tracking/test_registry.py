"""The model registry: versions, and aliases that move (not the deprecated stages)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import mlflow
import pytest

from quarry.exceptions import ConflictError, DataError, UsageError
from quarry.tracking import (
    alias_history,
    alias_version,
    client,
    current_user,
    describe_model,
    experiment_id,
    list_models,
    move_alias,
    promote,
    quiet_mlflow,
    register,
    rollback,
    set_alias,
    tracking_uri,
)
from tests.tracking.helpers import given_metadata


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
    first = register(_logged_run(), "alpha", given_metadata())
    second = register(_logged_run(), "alpha", given_metadata())
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
        outcomes = list(pool.map(lambda v: move_alias("beta", "champion", v, expected=1,
                                                      by="test", reason="race"),
                                 versions[1:]))  # fmt: skip
    winners = [v for v, now in zip(versions[1:], outcomes, strict=True) if now is None]
    assert len(winners) == 1
    assert alias_version("beta", "champion") == winners[0]
    assert all(now == winners[0] for now in outcomes if now is not None)
    moved = move_alias("beta", "champion", 5, expected=None, by="test", reason="race")
    assert moved == winners[0]  # set: not None


# The audit trail: every move of an alias is an event in the registry itself.


def _model(name: str, versions: int, source: Path) -> list[int]:
    """A registered model with ``versions`` cheap versions (no logged model behind them)."""
    registry = client()
    registry.create_registered_model(name)
    return [
        int(registry.create_model_version(name, source=source.as_uri()).version)
        for _ in range(versions)
    ]


def _version_of_run(name: str, source: Path, tags: dict[str, str],
                    metrics: dict[str, float]) -> tuple[int, str]:  # fmt: skip
    """A version whose run has the tags and metrics training would log."""
    with mlflow.start_run(experiment_id=experiment_id("registry-test")) as run:
        mlflow.set_tags(tags)
        mlflow.log_metrics(metrics)
    run_id = str(run.info.run_id)
    made = client().create_model_version(name, source=source.as_uri(), run_id=run_id)
    return int(made.version), run_id


def test_promote_then_rollback_returns_the_alias_and_records_both(tmp_path: Path) -> None:
    _model("gamma", 3, tmp_path)
    first = promote("gamma", 1, by="ana", reason="first model")
    assert first is not None
    assert (first.from_version, first.to_version) == (None, 1)
    moved = promote("gamma", 3, by="ben", reason="better on the 2024 window")
    assert moved is not None and (moved.from_version, moved.to_version) == (1, 3)
    assert alias_version("gamma", "champion") == 3
    back = rollback("gamma", by="cyd", reason="version 3 drifts")
    assert alias_version("gamma", "champion") == 1
    assert (back.from_version, back.to_version) == (3, 1)
    history = alias_history("gamma")
    assert [(e.number, e.alias, e.from_version, e.to_version, e.by, e.reason) for e in history] == [
        (1, "champion", None, 1, "ana", "first model"),
        (2, "champion", 1, 3, "ben", "better on the 2024 window"),
        (3, "champion", 3, 1, "cyd", "version 3 drifts"),
    ]
    times = [datetime.fromisoformat(e.at) for e in history]
    assert times == sorted(times) and all(t.tzinfo is not None for t in times)
    # stored in the registry itself: one registered-model tag per event, as JSON
    tags = client().get_registered_model("gamma").tags
    assert json.loads(tags["quarry.alias_event.000002"]) == {
        "alias": "champion", "from": 1, "to": 3, "by": "ben", "at": history[1].at,
        "reason": "better on the 2024 window", "run_id": None,
    }  # fmt: skip
    # a second rollback undoes the rollback
    assert rollback("gamma", by="dan").to_version == 3


def test_a_promotion_decided_against_a_stale_version_is_refused(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    versions = _model("delta", 9, tmp_path)
    promote("delta", 1, by="ana", reason="start")

    def attempt(version: int) -> int | str:
        try:
            promote("delta", version, by=f"user{version}", reason="saw 1", expected=1)
        except ConflictError as exc:
            return str(exc)
        return version

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, versions[1:]))
    winners = [o for o in outcomes if isinstance(o, int)]
    assert len(winners) == 1
    assert alias_version("delta", "champion") == winners[0]
    refusals = [o for o in outcomes if isinstance(o, str)]
    assert len(refusals) == 7
    assert all(f"now points at version {winners[0]}" in r and "expected version 1" in r
               for r in refusals)  # fmt: skip
    history = alias_history("delta")
    assert [(e.from_version, e.to_version) for e in history] == [(None, 1), (1, winners[0])]
    with pytest.raises(ConflictError, match=f"now points at version {winners[0]} .expected it "
                       "to be unset"):  # fmt: skip
        promote("delta", 2, by="eve", reason="x", expected=None)


def test_the_gate_moves_by_compare_and_set_and_is_recorded_as_the_gate(tmp_path: Path) -> None:
    _model("eps", 2, tmp_path)
    assert move_alias("eps", "champion", 1, expected=None, by="gate (run r1)",
                      reason="the first registered model", run_id="r1") is None  # fmt: skip
    assert move_alias("eps", "champion", 2, expected=None, by="gate (run r2)",
                      reason="beat it", run_id="r2") == 1  # fmt: skip
    (event,) = alias_history("eps")  # the refused move left no event
    assert (event.by, event.run_id, event.reason) == ("gate (run r1)", "r1",
                                                      "the first registered model")  # fmt: skip


def test_set_alias_is_recorded_too(tmp_path: Path) -> None:
    _model("zeta", 2, tmp_path)
    set_alias("zeta", "challenger", 2, by="ana", reason="shadow")
    set_alias("zeta", "challenger", 1)
    history = alias_history("zeta", "challenger")
    assert [(e.from_version, e.to_version, e.by) for e in history] == [
        (None, 2, "ana"), (2, 1, current_user()),
    ]  # fmt: skip


def test_rollback_refuses_what_it_cannot_undo(tmp_path: Path) -> None:
    _model("eta", 3, tmp_path)
    with pytest.raises(UsageError, match=r"model eta has no alias 'champion' \(it has none\)"):
        rollback("eta")
    promote("eta", 1, by="ana", reason="first")
    with pytest.raises(UsageError, match="its first: no earlier version to return to"):
        rollback("eta")
    promote("eta", 2, by="ana", reason="second")
    client().set_registered_model_alias("eta", "champion", "3")  # moved outside Quarry
    with pytest.raises(UsageError, match="points at version 3 but its last recorded move "
                       "went to version 2"):  # fmt: skip
        rollback("eta")
    assert alias_version("eta", "champion") == 3


def test_unknown_models_versions_and_aliases_name_what_exists(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no registered model 'nope' \(no model is registered"):
        describe_model("nope")
    _model("theta", 3, tmp_path)
    _model("iota", 1, tmp_path)
    with pytest.raises(UsageError, match=r"no registered model 'thet' \(models: iota, theta\)"):
        promote("thet", 1, by="ana", reason="x")
    with pytest.raises(UsageError, match=r"model theta has no version 7 \(versions: 1, 2, 3\)"):
        promote("theta", 7, by="ana", reason="x")
    promote("theta", 2, alias="challenger", by="ana", reason="x")
    with pytest.raises(UsageError, match=r"has no alias 'champ' \(aliases: challenger\)"):
        rollback("theta", alias="champ")
    with pytest.raises(UsageError, match="alias 'latest' is reserved by MLflow"):
        promote("theta", 1, alias="latest", by="ana", reason="x")


def test_models_are_described_from_their_runs(tmp_path: Path) -> None:
    client().create_registered_model("kappa")
    tags = {"quarry.model_type": "lightgbm", "quarry.columns": "158"}
    one, run_one = _version_of_run("kappa", tmp_path, tags, {"test_rank_ic": 0.031})
    assert (one, describe_model("kappa").versions[0].run_id) == (1, run_one)
    two, run_two = _version_of_run(
        "kappa", tmp_path, {"quarry.model_type": "linear", "quarry.columns": "20"},
        {"test_rank_ic": 0.045, "backtest_sharpe": 1.25, "valid_ic": 0.02},
    )  # fmt: skip
    promote("kappa", two, by="ana", reason="best")
    _model("lambda", 1, tmp_path)  # no run, no alias
    detail = describe_model("kappa")
    assert [v.version for v in detail.versions] == [2, 1]  # newest first
    newest = detail.versions[0]
    assert (newest.run_id, newest.model_type, newest.features, newest.aliases) == (
        run_two, "linear", 20, ["champion"],
    )  # fmt: skip
    assert newest.metrics == {"test_rank_ic": 0.045, "backtest_sharpe": 1.25, "valid_ic": 0.02}
    assert detail.versions[1].metrics == {"test_rank_ic": 0.031}
    assert datetime.fromisoformat(newest.created).tzinfo is not None
    assert detail.aliases == {"champion": 2}
    assert [e.to_version for e in detail.history] == [2]
    summaries = {s.name: s for s in list_models()}
    assert set(summaries) == {"kappa", "lambda"}
    assert (summaries["kappa"].latest_version, summaries["kappa"].versions) == (2, 2)
    assert summaries["kappa"].champion == 2
    assert summaries["kappa"].figures == {"test_rank_ic": 0.045, "backtest_sharpe": 1.25}
    assert (summaries["lambda"].champion, summaries["lambda"].figures) == (None, {})


def test_no_move_without_its_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A registry that takes the alias but refuses the event's tag (a write that cannot be
    provoked for real here): the alias is put back and nothing is recorded."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    _model("mu", 2, tmp_path)
    promote("mu", 1, by="ana", reason="first")

    def refuse(self: MlflowClient, name: str, key: str, value: str) -> None:
        raise MlflowException("database is locked")

    monkeypatch.setattr(MlflowClient, "set_registered_model_tag", refuse)
    with pytest.raises(UsageError, match="database is locked"):
        promote("mu", 2, by="ben", reason="second")
    assert alias_version("mu", "champion") == 1
    assert [e.to_version for e in alias_history("mu")] == [1]


def test_a_damaged_record_is_named(tmp_path: Path) -> None:
    _model("nu", 1, tmp_path)
    client().set_registered_model_tag("nu", "quarry.alias_event.000004", "not json")
    with pytest.raises(DataError, match=r"model nu: registry tag quarry.alias_event.000004 is "
                       "not an alias event"):  # fmt: skip
        alias_history("nu")
    promote("nu", 1, by="ana", reason="first")  # numbered after it
    assert "quarry.alias_event.000005" in client().get_registered_model("nu").tags


def test_register_prints_nothing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """MLflow announces each registration ("Successfully registered model", "Created
    version"); Quarry returns the version and says what happened in its own words."""
    runs = [_logged_run(), _logged_run()]
    capfd.readouterr()
    # a new model, then a version
    assert [register(run, "quiet", given_metadata()) for run in runs] == [1, 2]
    assert capfd.readouterr() == ("", "")


def test_a_tracking_uri_is_shown_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from quarry.tracking import shown_uri
    from quarry.tracking._registry import _registry_error

    secret = "https://ann:s3cretpw@mlflow.example/"  # noqa: S105 (a made-up one, to be hidden)
    assert shown_uri(secret) == "https://ann:***@mlflow.example/"
    assert shown_uri("postgresql://u:pw@db:5432/mlflow") == "postgresql://u:***@db:5432/mlflow"
    assert shown_uri("sqlite:////srv/mlflow.db") == "sqlite:////srv/mlflow.db"
    monkeypatch.setenv("QUARRY_TRACKING_URI", secret)
    message = str(_registry_error(RuntimeError("connection refused")))
    assert "s3cretpw" not in message and "ann:***@mlflow.example" in message
