"""A trained model packaged with everything it needs to score: the feature expressions it
reads, the label it learned, the processors fitted on its training data, and the order and
type of its input columns.

A registered model is one of these (logged by ``quarry.tracking.log_packaged``), so loading a
version needs nothing from the workflow that made it: the promotion gate computes a
champion's own features and applies its own processors, and serving can do the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
# Rows scored at once through a matrix: a bound on the float64 copy of a large frame.
CHUNK_ROWS = 65_536


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

    @property
    def row_wise(self) -> bool:
        """True when each row scores on its own (no processor reads a whole date), so
        ``score_matrix`` applies."""
        pipeline = self.recipe.processors
        return pipeline is None or pipeline.is_row_wise(inference=True)

    def score_matrix(self, matrix: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Scores of rows of raw features without a frame: ``matrix`` is rows by ``names``
        (numbers, NaN for missing). The same scores as ``score`` of a frame of those rows;
        only for a ``row_wise`` model."""
        return self.matrix_scorer(names)(matrix)

    def matrix_scorer(
        self, names: Sequence[str], *, threads: int | None = None
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``score_matrix`` for matrices of ``names``, prepared once (the processors' steps,
        the columns picked): a server keeps one per loaded version. ``threads``: the most
        the estimator may use (``Model.predict``)."""
        pipeline = self.recipe.processors
        if pipeline is not None and not pipeline.is_row_wise(inference=True):
            raise UsageError(
                f"the {self.model_type} model's processors read whole dates: score a frame "
                "of the day's cross-section"
            )
        index = {c: i for i, c in enumerate(names)}
        missing = [c for c in self.columns if c not in index]
        if missing:
            raise UsageError(
                f"the {self.model_type} model reads columns the frame does not have: "
                f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}"
            )
        transform = (pipeline.array_transformer(names, inference=True) if pipeline is not None
                     else np.asarray)  # fmt: skip
        picked = np.asarray([index[c] for c in self.columns], dtype=np.intp)
        # the model's columns in the matrix's own order (a stream's, a table's): no copy
        every = np.array_equal(picked, np.arange(len(names)))
        predict = self.estimator.predict

        def score(matrix: np.ndarray) -> np.ndarray:
            x = transform(matrix)
            x = (x if every else x[:, picked]).astype(INPUT_DTYPE)
            return np.asarray(predict(x, threads=threads), dtype=np.float64).reshape(-1)

        return score

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        """Scores of ``frame``'s rows (instrument, date and the raw features), in its order.

        The fitted processors are applied first, as at inference (no label, nothing
        dropped), then the columns are cast and ordered as in training. When every
        processor is row-wise and the features are numbers, through ``score_matrix`` in
        chunks of rows (one route for serving and research, and a bounded copy)."""
        names = [c for c in frame.columns if c not in ("instrument", "date")]
        schema = frame.schema
        if self.row_wise and names and all(schema[c].is_float() for c in names):
            score = self.matrix_scorer(names)  # its checks, even for a frame of no rows
            if frame.height == 0:
                return np.empty(0, dtype=np.float64)
            return np.concatenate([
                score(part.select(pl.col(names).cast(pl.Float64)).to_numpy(order="c"))
                for part in frame.iter_slices(CHUNK_ROWS)
            ])  # fmt: skip
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
