"""Experiment tracking and the model registry, on MLflow.

By default everything stays on this machine: a SQLite database and an artifact folder under
``$QUARRY_HOME``; ``QUARRY_TRACKING_URI`` points at a tracking server (or another database)
instead. A model version is registered only with its metadata (who made it, for what, from
which features, data and workflow file: ``model_metadata``), checked against the JSON Schema
shipped beside this package (``metadata_schema``). Versions are promoted with MLflow aliases
(``champion``, ``challenger``), not the deprecated stages; every move of an alias is recorded
in the registry (who, when, from which version to which, and why: ``alias_history``).
"""

from typing import TYPE_CHECKING

from quarry._lazy import exports

if TYPE_CHECKING:  # imported on first use (``quarry._lazy``): MLflow and Polars only if needed
    from quarry.tracking._metadata import metadata_schema, validate_metadata
    from quarry.tracking._mlflow import (
        TRACKING_ENV,
        alias_version,
        client,
        experiment_id,
        models_at,
        quiet_mlflow,
        shown_uri,
        tracking_uri,
    )
    from quarry.tracking._models import load_packaged, log_packaged
    from quarry.tracking._registry import (
        DEFAULT_ALIAS,
        KEY_FIGURES,
        AliasEvent,
        ModelDetail,
        ModelSummary,
        VersionInfo,
        alias_history,
        current_user,
        describe_model,
        list_models,
        model_metadata,
        move_alias,
        promote,
        register,
        rollback,
        set_alias,
        sync_metrics,
    )

# each submodule and the public names it defines
_MODULES = {
    "_metadata": "metadata_schema validate_metadata",
    "_mlflow": "TRACKING_ENV alias_version client experiment_id models_at quiet_mlflow "
    "shown_uri tracking_uri",
    "_models": "load_packaged log_packaged",
    "_registry": "DEFAULT_ALIAS KEY_FIGURES AliasEvent ModelDetail ModelSummary VersionInfo "
    "alias_history current_user describe_model list_models model_metadata move_alias promote "
    "register rollback set_alias sync_metrics",
}

__all__ = [
    "DEFAULT_ALIAS",
    "KEY_FIGURES",
    "TRACKING_ENV",
    "AliasEvent",
    "ModelDetail",
    "ModelSummary",
    "VersionInfo",
    "alias_history",
    "alias_version",
    "client",
    "current_user",
    "describe_model",
    "experiment_id",
    "list_models",
    "load_packaged",
    "log_packaged",
    "metadata_schema",
    "model_metadata",
    "models_at",
    "move_alias",
    "promote",
    "quiet_mlflow",
    "register",
    "rollback",
    "set_alias",
    "shown_uri",
    "sync_metrics",
    "tracking_uri",
    "validate_metadata",
]

if not TYPE_CHECKING:  # type checkers read the imports above, and flag a misspelled name
    __getattr__, __dir__ = exports(__name__, _MODULES)
