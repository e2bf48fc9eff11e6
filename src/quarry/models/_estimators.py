"""Models as estimators: fit on a training segment, early-stop on a validation segment,
predict a score; deterministic given a seed.

LightGBM is the default, with the parameters of Qlib's Alpha158 benchmark; a linear model
(ridge or lasso) picks its penalty on the validation segment (its form of early stopping).
Models are logged to MLflow packaged with their recipe (``quarry.models.PackagedModel``),
whatever their type.
"""

from __future__ import annotations

import difflib
import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from quarry.exceptions import NotFittedError, UsageError

__all__ = ["MODELS", "QLIB_LIGHTGBM", "LightGBMModel", "LinearModel", "Model", "make_model"]

# Qlib's examples/benchmarks/LightGBM/workflow_config_lightgbm_Alpha158.yaml (num_threads is
# the machine's instead of 20), trained with 1,000 rounds and early stopping after 50.
QLIB_LIGHTGBM: dict[str, Any] = {
    "objective": "regression",  # Qlib's loss: mse
    "colsample_bytree": 0.8879,
    "learning_rate": 0.2,
    "subsample": 0.8789,
    "lambda_l1": 205.6999,
    "lambda_l2": 580.9768,
    "max_depth": 8,
    "num_leaves": 210,
}
# Up to this many rows, LightGBM predicts on one thread (see LightGBMModel.predict).
SMALL_PREDICT_ROWS = 2_048


class Model(Protocol):
    """What training needs of a model."""

    name: str

    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> Model: ...

    def predict(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """Scores of the rows of ``x``; ``threads``: at most that many threads where the
        library takes a count per call (LightGBM; the others run as they do), None: as many
        as it likes."""
        ...

    def params(self) -> dict[str, Any]: ...


class LightGBMModel:
    """Gradient-boosted trees (LightGBM), early-stopped on the validation segment."""

    name = "lightgbm"

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        num_boost_round: int = 1000,
        early_stopping_rounds: int = 50,
    ) -> None:
        from quarry.models._params import lightgbm_params

        # Checked by LightGBM's own table and configuration; an alias replaces its default.
        self.lgb_params, rounds, patience = lightgbm_params(params, QLIB_LIGHTGBM)
        self.seed = seed
        self.num_boost_round = num_boost_round if rounds is None else rounds
        self.early_stopping_rounds = early_stopping_rounds if patience is None else patience
        self.booster_: Any = None
        # progress for the person waiting: a line per boosting round (see ``_report``)
        self.on_progress: Callable[[str], None] | None = None
        self._best: tuple[float, int] = (math.inf, 0)

    def params(self) -> dict[str, Any]:
        return {
            **self.lgb_params,
            "seed": self.seed,
            "num_boost_round": self.num_boost_round,
            "early_stopping_rounds": self.early_stopping_rounds,
        }

    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> LightGBMModel:
        import lightgbm as lgb

        params = {
            **self.lgb_params,
            "seed": self.seed,
            "deterministic": True,  # same seed, same data: the same trees
            "force_row_wise": True,
            "num_threads": self.lgb_params.get("num_threads", os.cpu_count() or 1),
            "verbosity": -1,
        }
        train = lgb.Dataset(x_train, y_train, free_raw_data=True)
        valid = lgb.Dataset(x_valid, y_valid, reference=train, free_raw_data=True)
        self._best = (math.inf, 0)
        try:
            self.booster_ = lgb.train(
                params,
                train,
                num_boost_round=self.num_boost_round,
                valid_sets=[valid],
                valid_names=["valid"],
                callbacks=[
                    lgb.early_stopping(self.early_stopping_rounds, verbose=False),
                    *([self._report] if self.on_progress is not None else []),
                ],
            )
        except lgb.basic.LightGBMError as exc:  # a parameter that does not fit the data
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no reason given"
            raise UsageError(f"LightGBM refused the training: {first}") from None
        return self

    def __getstate__(self) -> dict[str, Any]:
        # the progress callback belongs to the training session, not to the fitted model
        return {**self.__dict__, "on_progress": None}

    def _report(self, env: Any) -> None:
        """Each round: its number, the validation loss, and the best loss so far (the round
        early stopping will keep)."""
        if self.on_progress is None:
            return
        done = env.iteration + 1
        line = f"boosting round {done}/{self.num_boost_round}"
        if env.evaluation_result_list:
            _, metric, value, higher_better = env.evaluation_result_list[0][:4]
            best, at = self._best
            if at == 0 or (value > best if higher_better else value < best):
                best, at = value, done
            self._best = (best, at)
            line += f": valid {metric} {value:.6g}, best {best:.6g} at round {at}"
        self.on_progress(line)

    @property
    def best_iteration(self) -> int:
        return int(self.booster_.best_iteration) if self.booster_ is not None else 0

    def predict(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        if self.booster_ is None:
            raise NotFittedError("the model is not trained yet: call fit first")
        # A few rows (a served request) on one thread: LightGBM's threads cost such a call
        # milliseconds to start and gain nothing; a large matrix gets them all (or those given).
        if x.shape[0] <= SMALL_PREDICT_ROWS:
            threads = 1
        count = {"num_threads": threads} if threads else {}
        out: np.ndarray = self.booster_.predict(
            x, num_iteration=self.booster_.best_iteration, **count
        )
        return out


class LinearModel:
    """Ridge (or lasso) regression on standardized features, missing values at the training
    mean; the penalty is the one of ``alphas`` with the least squared error on the
    validation segment."""

    name = "linear"

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
    ) -> None:
        from quarry.models._params import validate_params

        params = validate_params("linear", params)
        self.kind = str(params.get("kind", "ridge"))
        self.alphas = [float(a) for a in params.get("alphas", [0.1, 1.0, 10.0, 100.0, 1000.0])]
        self.seed = seed
        self.pipeline_: Any = None
        self.alpha_: float | None = None
        self.on_progress: Callable[[str], None] | None = None  # a line per penalty tried

    def params(self) -> dict[str, Any]:
        return {"kind": self.kind, "alphas": self.alphas, "seed": self.seed}

    def _pipeline(self, alpha: float) -> Any:
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import Lasso, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        regression = (
            Ridge(alpha=alpha, random_state=self.seed)
            if self.kind == "ridge"
            else Lasso(alpha=alpha / 1000.0, random_state=self.seed, max_iter=5000)
        )
        return make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(), regression)

    def fit(
        self, x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> LinearModel:
        from scipy.linalg import LinAlgWarning

        best: tuple[float, float, Any] | None = None
        for k, alpha in enumerate(self.alphas, 1):
            with warnings.catch_warnings():
                # Correlated features (Alpha158 has many) make the unpenalized system
                # ill-conditioned; the penalty is what handles that, and the one that
                # predicts the valid segment best is kept: nothing for the user to act on.
                warnings.simplefilter("ignore", LinAlgWarning)
                pipeline = self._pipeline(alpha).fit(_finite(x_train), y_train)
            error = float(np.mean((pipeline.predict(_finite(x_valid)) - y_valid) ** 2))
            if best is None or error < best[0]:
                best = (error, alpha, pipeline)
            if self.on_progress is not None:
                self.on_progress(
                    f"{self.kind} alpha {k}/{len(self.alphas)} ({alpha:g}): valid mse "
                    f"{error:.6g}, best {best[0]:.6g} at alpha {best[1]:g}"
                )
        assert best is not None
        _, self.alpha_, self.pipeline_ = best
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "on_progress": None}

    def predict(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        if self.pipeline_ is None:
            raise NotFittedError("the model is not trained yet: call fit first")
        out: np.ndarray = self.pipeline_.predict(_finite(x))
        return out


def _finite(x: np.ndarray) -> np.ndarray:
    """Infinities become missing, which the imputer fills (a linear model cannot take inf)."""
    return np.where(np.isfinite(x), x, np.nan)


MODELS: dict[str, type[LightGBMModel] | type[LinearModel]] = {
    "lightgbm": LightGBMModel,
    "linear": LinearModel,
}


def make_model(name: str, params: Mapping[str, Any] | None = None, *, seed: int = 0) -> Model:
    """A model by name (``lightgbm``, ``linear``, or ``mlp`` with the ``mlp`` extra)."""
    if name == "mlp":
        from quarry.models._mlp import MLPModel

        mlp: Model = MLPModel(params, seed=seed)
        return mlp
    if name not in MODELS:
        close = difflib.get_close_matches(name, [*MODELS, "mlp"], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown model {name!r}{hint} (models: lightgbm, linear, mlp)")
    return MODELS[name](params, seed=seed)
