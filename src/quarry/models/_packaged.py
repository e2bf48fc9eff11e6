"""A trained model packaged with everything it needs to score: the feature expressions it
reads, the label it learned, the processors fitted on its training data, and the order and
type of its input columns.

A registered model is one of these (logged by ``quarry.tracking.log_packaged``), so loading a
version needs nothing from the workflow that made it: the promotion gate computes a
champion's own features and applies its own processors, and serving can do the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from quarry.exceptions import UsageError
from quarry.features import Pipeline
from quarry.models._estimators import Model

__all__ = ["INPUT_DTYPE", "PackagedModel", "Recipe"]

#: the type every feature column is cast to before the estimator sees it (as in training)
INPUT_DTYPE = "float32"


@dataclass(frozen=True)
class Recipe:
    """How a model's inputs are made.

    ``features``: feature name -> expression (Qlib's notation), as computed from the store;
    ``label``: the label's expression (what the model learned to predict); ``processors``:
    the pipeline as fitted on the training data (learning-only steps are skipped when
    scoring).
    """

    features: Mapping[str, str] = field(default_factory=dict)
    label: str | None = None
    processors: Pipeline | None = None


@dataclass(frozen=True)
class PackagedModel:
    """A fitted estimator with its recipe and input columns; see the module docstring."""

    model_type: str
    estimator: Model
    columns: tuple[str, ...]
    recipe: Recipe = field(default_factory=Recipe)

    def inputs(self) -> dict[str, str]:
        """The expressions to compute for scoring: those of the columns, and, when fitted
        processors are kept, every feature they were fitted on (they read whole frames)."""
        names = self.recipe.features.keys() if self.recipe.processors else self.columns
        return {n: self.recipe.features[n] for n in names if n in self.recipe.features}

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        """Scores of ``frame``'s rows (instrument, date and the raw features), in its order.

        The fitted processors are applied first, as at inference (no label, nothing
        dropped), then the columns are cast and ordered as in training."""
        if self.recipe.processors is not None:
            frame = self.recipe.processors.transform(frame, inference=True)
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise UsageError(
                f"the {self.model_type} model reads columns the frame does not have: "
                f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
            )
        matrix: np.ndarray = frame.select(pl.col(list(self.columns)).cast(pl.Float32)).to_numpy()
        return np.asarray(self.estimator.predict(matrix), dtype=np.float64).reshape(-1)

    def describe(self) -> dict[str, Any]:
        """Plain data about the package (for tags and catalogs)."""
        return {
            "model_type": self.model_type,
            "columns": list(self.columns),
            "input_dtype": INPUT_DTYPE,
            "features": dict(self.recipe.features),
            "label": self.recipe.label,
            "processors": self.recipe.processors.to_dict() if self.recipe.processors else None,
        }
