"""MLflow set up for Quarry: where runs live, experiments, and reading aliases (registering
versions with their metadata, moving aliases with their history: ``quarry.tracking._registry``)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from quarry.exceptions import UsageError
from quarry.settings import quarry_home
from quarry.tracking._registry_memo import RegistryMemo as _RegistryMemo

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = [
    "TRACKING_ENV",
    "alias_version",
    "client",
    "experiment_id",
    "models_at",
    "quiet_mlflow",
    "shown_uri",
    "tracking_uri",
]

TRACKING_ENV = "QUARRY_TRACKING_URI"

# MLflow 3 reports usage to its makers over the network unless told not to; Quarry's
# tracking stays on the machine (or the team's own server).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Loading a registered model (the gate, serving) would draw a progress bar per download.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# A tracking server that does not answer is an error in seconds, not minutes of retries.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def shown_uri(uri: str | None = None) -> str:
    """The tracking URI as it may be shown (a message, a log, a job's output): without the
    password a server or database URL may carry."""
    from urllib.parse import urlsplit, urlunsplit

    uri = tracking_uri() if uri is None else uri
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


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


class _Discard:
    """A stream that keeps nothing (what MLflow's event lines are printed to, see below)."""

    enabled = False

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@contextmanager
def quiet_mlflow(*loggers: str, events: bool = False) -> Iterator[None]:
    """MLflow's notes that a user of Quarry cannot act on, kept off the terminal while the
    block runs: the type hints it infers for its own wrappers, the input example it asks for
    (the signature is given), the INFO and WARNING lines of ``loggers``, and with ``events``
    its event lines ("Successfully registered model ...": the caller says what happened in
    its own words). Errors still show."""
    import mlflow.utils.logging_utils as mlflow_logging

    saved = [(log, log.level) for log in map(logging.getLogger, loggers)]
    for log, _ in saved:
        log.setLevel(logging.ERROR)
    # MLflow prints its events to the module's MLFLOW_LOGGING_STREAM, looked up at each
    # print; its loggers hold the stream object itself. (Its own on/off switch is turned
    # back on by MLflow whenever some of its modules are imported.)
    stream = mlflow_logging.MLFLOW_LOGGING_STREAM
    if events:
        mlflow_logging.MLFLOW_LOGGING_STREAM = _Discard()  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*type hint", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
            yield
    finally:
        mlflow_logging.MLFLOW_LOGGING_STREAM = stream
        for log, level in saved:
            log.setLevel(level)


def models_at(alias: str) -> dict[str, int]:
    """Every registered model that has ``alias``, with the version it points at (one search
    of the registry, paged: cheap enough to ask every second)."""
    from mlflow.exceptions import MlflowException

    found: dict[str, int] = {}
    token = None
    try:
        while True:
            page = client().search_registered_models(max_results=1000, page_token=token)
            found |= {m.name: int(m.aliases[alias]) for m in page if alias in m.aliases}
            token = page.token
            if not token:
                return found
    except MlflowException as exc:
        raise UsageError(f"model registry: {str(exc).splitlines()[0]}") from exc


def alias_version(name: str, alias: str) -> int | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist.

    On a SQLite tracking database, an answer is remembered until the database next changes
    (see ``_registry_memo``): a cached ``quarry run`` asks for its champion without paying
    for MLflow's import and store set-up, seconds against the rest of a cached run."""
    memo = _RegistryMemo.open(tracking_uri())
    key = f"{name}\x00{alias}"
    if memo is not None and key in memo.aliases:
        return memo.aliases[key]
    found = _alias_from_mlflow(name, alias)
    if memo is not None:
        memo.remember(key, found)
    return found


def _alias_from_mlflow(name: str, alias: str) -> int | None:
    from mlflow.exceptions import MlflowException

    try:
        version = client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc.error_code) or "not found" in str(exc).lower():
            return None
        raise UsageError(f"model registry: {str(exc).splitlines()[0]}") from exc
    return int(version.version)
