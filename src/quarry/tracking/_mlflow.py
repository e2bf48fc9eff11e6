"""MLflow set up for Quarry: where runs live, experiments, registry aliases."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from quarry.exceptions import UsageError
from quarry.settings import quarry_home

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "TRACKING_ENV",
    "alias_version",
    "client",
    "experiment_id",
    "move_alias",
    "register",
    "set_alias",
    "tracking_uri",
]

TRACKING_ENV = "QUARRY_TRACKING_URI"

# MLflow 3 reports usage to its makers over the network unless told not to; Quarry's
# tracking stays on the machine (or the team's own server).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Loading a registered model (the gate, serving) would draw a progress bar per download.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def tracking_uri() -> str:
    """``$QUARRY_TRACKING_URI``, or a SQLite database under ``$QUARRY_HOME``."""
    uri = os.environ.get(TRACKING_ENV)
    if uri:
        return uri
    home = quarry_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


ARTIFACT_ENV = "QUARRY_ARTIFACT_URI"


def _artifact_root() -> str | None:
    """Where a new experiment keeps its artifacts: ``$QUARRY_ARTIFACT_URI`` (for example an
    ``s3://`` prefix); a tracking server decides its own; otherwise a folder under
    ``$QUARRY_HOME`` (MLflow's own default for a database would be ./mlruns wherever the
    process happens to run)."""
    explicit = os.environ.get(ARTIFACT_ENV)
    if explicit:
        return explicit
    if tracking_uri().startswith(("http://", "https://", "databricks")):
        return None
    return (quarry_home() / "mlartifacts").as_uri()


def client() -> MlflowClient:
    """An MLflow client on Quarry's tracking URI (also set as the process's default, so
    that ``mlflow.start_run`` and the model flavors log to the same place)."""
    import logging

    import mlflow

    # A new database's schema set-up logs a page of INFO lines: nothing to act on.
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(uri, registry_uri=uri)


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created on first use."""
    mlflow_client = client()
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(mlflow_client.create_experiment(name, artifact_location=_artifact_root()))


def register(run_id: str, name: str, artifact: str = "model") -> int:
    """Register the model a run logged as a new version of ``name``; returns the version."""
    import logging

    import mlflow

    client()
    # MLflow 3 keeps a run's model as a logged model and says so at every registration.
    fluent = logging.getLogger("mlflow.tracking._model_registry.fluent")
    level = fluent.level
    fluent.setLevel(logging.ERROR)
    try:
        version = mlflow.register_model(f"runs:/{run_id}/{artifact}", name)
    finally:
        fluent.setLevel(level)
    return int(version.version)


def set_alias(name: str, alias: str, version: int) -> None:
    """Point ``alias`` of registered model ``name`` at ``version`` (moving it if set)."""
    client().set_registered_model_alias(name, alias, str(version))


def alias_version(name: str, alias: str) -> int | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        version = client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return None
        raise UsageError(f"model registry: {str(exc).splitlines()[0]}") from exc
    return int(version.version)


@contextlib.contextmanager
def _registry_lock() -> Iterator[None]:
    """Held while an alias is read and moved, so that two processes on this machine cannot
    both move it from the same version. (MLflow's registry has no compare-and-set; several
    machines sharing one tracking server are not serialized by this lock.)"""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///") + ".lock")
    else:
        name = hashlib.sha256(uri.encode()).hexdigest()[:16]
        path = quarry_home() / "locks" / f"registry-{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def move_alias(name: str, alias: str, version: int, *, expected: int | None) -> int | None:
    """Compare-and-set: point ``alias`` of ``name`` at ``version`` only if it still points at
    ``expected`` (None: not set), the version that was evaluated against.

    Returns None when the alias was moved, else the version it points at now (it moved
    since it was read; -1 when it was removed)."""
    with _registry_lock():
        current = alias_version(name, alias)
        if current != expected:
            return -1 if current is None else current
        set_alias(name, alias, version)
        return None
