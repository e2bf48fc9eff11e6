"""Experiment tracking and the model registry, on MLflow.

By default everything stays on this machine: a SQLite database and an artifact folder under
``$QUARRY_HOME``; ``QUARRY_TRACKING_URI`` points at a tracking server (or another database)
instead. Model versions are promoted with MLflow aliases (``champion``, ``challenger``),
not the deprecated stages.
"""

from quarry.tracking._mlflow import (
    TRACKING_ENV,
    alias_version,
    client,
    experiment_id,
    move_alias,
    register,
    set_alias,
    tracking_uri,
)
from quarry.tracking._models import load_packaged, log_packaged, quiet_mlflow

__all__ = [
    "TRACKING_ENV",
    "alias_version",
    "client",
    "experiment_id",
    "load_packaged",
    "log_packaged",
    "move_alias",
    "quiet_mlflow",
    "register",
    "set_alias",
    "tracking_uri",
]
