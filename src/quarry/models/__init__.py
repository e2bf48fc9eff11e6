"""Models: datasets honest about time, estimators, training tracked in MLflow, and the
analysis of the scores they produce.

- Datasets: train/valid/test segments or a walk-forward schedule, a purge gap of the label's
  horizon between them (``check_segments`` refuses a leak, ``purge`` makes the gap).
- Models: LightGBM (Qlib's benchmark parameters), ridge/lasso, and an MLP with the ``mlp``
  extra; early-stopped on the valid segment, deterministic given a seed.
- ``train``: fit, score every segment, write predictions and metrics, log to MLflow.
- ``search``: Optuna over a parameter space, trials in batches on an executor (in this
  process, or as Ray tasks), each a nested MLflow run, scored on the validation segment.
- Scores are measured with ``quarry.signals`` (IC, Rank IC, quantile returns, turnover).
"""

from quarry.models._dataset import (
    Segments,
    WalkForward,
    Window,
    check_segments,
    label_horizon,
    purge,
    split,
)
from quarry.models._estimators import (
    MODELS,
    QLIB_LIGHTGBM,
    LightGBMModel,
    LinearModel,
    Model,
    make_model,
)
from quarry.models._packaged import PackagedModel, Recipe
from quarry.models._params import MODEL_NAMES, validate_params
from quarry.models._search import (
    DEFAULT_SPACES,
    SEARCH_METRICS,
    SearchResult,
    parse_space,
    search,
)
from quarry.models._train import TrainResult, feature_columns, train, train_walk_forward

__all__ = [
    "DEFAULT_SPACES",
    "MODELS",
    "MODEL_NAMES",
    "QLIB_LIGHTGBM",
    "SEARCH_METRICS",
    "LightGBMModel",
    "LinearModel",
    "Model",
    "PackagedModel",
    "Recipe",
    "SearchResult",
    "Segments",
    "TrainResult",
    "WalkForward",
    "Window",
    "check_segments",
    "feature_columns",
    "label_horizon",
    "make_model",
    "parse_space",
    "purge",
    "search",
    "split",
    "train",
    "train_walk_forward",
    "validate_params",
]
