"""Models in MLflow: every model type logged the same way, as a pyfunc model that carries its
package (``quarry.models.PackagedModel``: the estimator with its recipe), with a signature of
named columns. Tracking sits below the models, which log through it: it knows a package only
by what it can do (``Packaged``).

Any MLflow client can load a version with ``mlflow.pyfunc.load_model`` and score a frame of
instrument, date and the raw feature columns; Quarry itself unwraps the package
(``load_packaged``) and scores polars frames without the pandas round trip.
"""

from __future__ import annotations

import contextlib
from typing import Any

import polars as pl

from quarry.exceptions import UsageError
from quarry.tracking._mlflow import quiet_mlflow
from quarry.tracking._packaged import Packaged

__all__ = ["load_packaged", "log_packaged"]

KEYS = ("instrument", "date")


def _requirements() -> list[str]:
    """What loading the model needs: Quarry and the engines the estimator was built with
    (given, so that MLflow does not load the model in a subprocess to guess them)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in ("quarry", "polars", "numpy", "lightgbm", "scikit-learn", "torch"):
        with contextlib.suppress(PackageNotFoundError):
            pins.append(f"{name}=={version(name)}")
    return pins


def log_packaged(packaged: Packaged, example: pl.DataFrame) -> None:
    """Log ``packaged`` as the active run's ``model`` artifact.

    ``example``: a few rows with instrument, date and the model's input columns, for the
    signature (named columns, whatever the model type)."""
    import mlflow
    from mlflow.models import infer_signature

    names = [*KEYS, *(packaged.inputs() or packaged.columns)]
    inputs = example.select([c for c in names if c in example.columns]).with_columns(
        pl.col(pl.Float32).cast(pl.Float64)
    )
    signature = infer_signature(inputs.to_pandas(), packaged.score(inputs))
    # MLflow logs a warning that a Python object is pickled: that is how a pyfunc model
    # carries its recipe, and the registry is the team's own.
    with quiet_mlflow("mlflow.pyfunc"):
        from quarry.tracking._pyfunc import QuarryPyfunc

        mlflow.pyfunc.log_model(
            name="model",
            python_model=QuarryPyfunc(packaged),
            signature=signature,
            pip_requirements=_requirements(),
        )
    mlflow.set_tags({"quarry.model_type": packaged.model_type,
                     "quarry.columns": str(len(packaged.columns))})  # fmt: skip
    mlflow.log_dict(packaged.describe(), "model/quarry.json")


def load_packaged(name: str, version: int) -> Packaged:
    """Version ``version`` of registered model ``name``, as its package.

    Raises UsageError when it cannot be loaded or was not logged by Quarry with its recipe
    (a version logged before models carried their features)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from quarry.tracking._mlflow import client

    client()
    try:
        with quiet_mlflow():
            loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    except Exception as exc:
        # Artifacts moved or deleted (MlflowException, OSError), or a pickle that cannot be
        # rebuilt here: a class moved since, a library missing (torch for an MLP): each
        # means this version cannot score, which its callers (the gate) must be told.
        raise UsageError(
            f"model {name} version {version} cannot be loaded: "
            f"{(str(exc).splitlines() or [type(exc).__name__])[0]}"
        ) from exc
    inner: Any = None
    with contextlib.suppress(MlflowException, AttributeError):
        inner = loaded.unwrap_python_model()
    packaged = getattr(inner, "packaged", None)
    if not isinstance(packaged, Packaged):
        raise UsageError(
            f"model {name} version {version} was not logged with its features and processors "
            "(a version from before Quarry packaged its models): train it again"
        )
    return packaged
