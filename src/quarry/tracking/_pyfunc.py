"""The MLflow pyfunc wrapper of a packaged model (imported only when a model is logged or
loaded: it imports MLflow)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import polars as pl
from mlflow.pyfunc.model import PythonModel

from quarry.tracking._packaged import Packaged

__all__ = ["QuarryPyfunc"]


class QuarryPyfunc(PythonModel):
    """Scores a frame of instrument, date and raw features with the packaged model."""

    def __init__(self, packaged: Packaged) -> None:
        self.packaged = packaged

    # A pandas frame as the type hint: MLflow builds no schema from it (the logged signature,
    # named columns, is the schema) and does not warn.
    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> np.ndarray:
        frame = pl.from_pandas(model_input)
        if "date" in frame.columns and frame.schema["date"] != pl.Date:
            frame = frame.with_columns(pl.col("date").cast(pl.Date))
        return np.asarray(self.packaged.score(frame), dtype=np.float64)
