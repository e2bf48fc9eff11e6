"""Training: features and a label -> a model, its predictions and metrics, tracked in MLflow.

The segments are checked against the label's horizon before anything is fitted, so a
training window whose labels reach into the validation or test period is refused. The label
is z-scored per day for learning (Qlib's CSZScoreNorm, with rows missing it dropped), but
every metric is computed against the raw label: IC is the mean over days of the
cross-sectional correlation between score and label.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from quarry._json import dumps
from quarry.exceptions import UsageError
from quarry.executors import Executor, LocalExecutor
from quarry.models._dataset import Segments, WalkForward, Window, check_segments, split
from quarry.models._estimators import LightGBMModel, Model, make_model
from quarry.models._packaged import PackagedModel, Recipe
from quarry.signals import analyze

__all__ = ["TrainResult", "feature_columns", "train", "train_walk_forward"]

KEYS = ("instrument", "date")
SEGMENTS = ("train", "valid", "test")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrainResult:
    """A finished training: the MLflow run, metrics per segment, and the test predictions."""

    run_id: str | None
    metrics: dict[str, dict[str, float]]
    predictions: pl.DataFrame
    model: Model
    seconds: float
    # The model learned nothing: on no day of some segment do its scores tell two instruments
    # apart (see ``_learned_nothing``); ``warnings`` says so in a sentence for the user.
    constant: bool = False
    warnings: tuple[str, ...] = ()

    def _repr_html_(self) -> str:
        """A notebook's view: the model, its MLflow run, each segment's IC, ICIR, Rank IC and
        Rank ICIR, and the warnings (``_html_view``)."""
        from quarry.models._html_view import train_html

        return train_html(
            self.model.name, self.metrics, self.predictions, run_id=self.run_id,
            seconds=self.seconds, warnings=self.warnings,
        )  # fmt: skip


def feature_columns(frame: pl.DataFrame, label: str) -> list[str]:
    """The numeric columns that are neither keys nor labels (``LABEL*``)."""
    return [
        c
        for c, t in frame.schema.items()
        if c not in KEYS and c != label and not c.startswith("LABEL") and t.is_numeric()
    ]


def _learnable(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """Rows with a finite label, the label z-scored per day (Qlib's DropnaLabel and
    CSZScoreNorm for learning)."""
    y = pl.col(label)
    rows = frame.filter(y.is_not_null() & y.is_finite())
    std = y.std(ddof=1).over("date")
    return rows.with_columns(
        pl.when(std > 0).then((y - y.mean().over("date")) / std).otherwise(0.0).alias(label)
    )


def _matrix(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    matrix: np.ndarray = frame.select(pl.col(columns).cast(pl.Float32)).to_numpy()
    return matrix


def train(
    features: pl.DataFrame,
    segments: Segments,
    *,
    label: str = "LABEL0",
    model: str = "lightgbm",
    params: Mapping[str, Any] | None = None,
    horizon: int = 2,
    seed: int = 0,
    out: Path | None = None,
    experiment: str | None = "quarry",
    tags: Mapping[str, str] | None = None,
    progress: Progress | bool | None = None,
    recipe: Recipe | None = None,
) -> TrainResult:
    """Fit ``model`` on the train segment, early-stop on valid, score all three segments.

    ``features`` has instrument, date, feature columns and ``label``. ``horizon`` is how many
    days ahead the label reads (2 for Qlib's default label): the segments must be that far
    apart. With ``out``, writes predictions.parquet (the test segment) and metrics.json;
    with ``experiment``, logs parameters, metrics, artifacts and the model to MLflow.
    ``progress=True`` shows what is happening (in a terminal or a notebook), boosting
    rounds included; a callable receives each message instead. ``recipe``: how the features
    were made (expressions, label, fitted processors), logged with the model so that a
    registered version can score by itself.
    """
    with _reporter(progress) as say:
        for column in (*KEYS, label):
            if column not in features.columns:
                raise UsageError(
                    f"the features have no {column!r} column (columns: "
                    f"{', '.join(features.columns[:12])}{', ...' if features.width > 12 else ''})"
                )
        columns = feature_columns(features, label)
        if not columns:
            raise UsageError("the features have no numeric feature column besides the label")
        if segments.valid is None:
            raise UsageError("training needs a valid segment to stop early on: give --valid")
        calendar = features["date"].unique().sort().to_list()
        check_segments(segments, calendar, horizon)
        parts = split(features, segments)
        for name, (first, last) in segments.spans():
            if parts[name].height == 0:
                raise UsageError(f"the {name} segment {first}:{last} holds no rows of the features")

        started = time.perf_counter()
        estimator = make_model(model, params, seed=seed)
        fit_train, fit_valid = _learnable(parts["train"], label), _learnable(parts["valid"], label)
        say(f"training {model} on {fit_train.height:,} rows x {len(columns)} features")
        if hasattr(estimator, "on_progress"):  # rounds, penalties or epochs, as it goes
            estimator.on_progress = say
        estimator.fit(
            _matrix(fit_train, columns),
            fit_train[label].to_numpy(),
            _matrix(fit_valid, columns),
            fit_valid[label].to_numpy(),
        )
        seconds = time.perf_counter() - started

        scored: dict[str, pl.DataFrame] = {}
        metrics: dict[str, dict[str, float]] = {}
        for name in SEGMENTS:
            part = parts[name]
            score = estimator.predict(_matrix(part, columns))
            scored[name] = part.select(*KEYS, pl.Series("score", score, dtype=pl.Float64), label)
            metrics[name] = analyze(scored[name], score="score", label=label).as_dict()
        warnings = _learned_nothing(estimator, scored, metrics)
        predictions = scored["test"].select(*KEYS, "score")

        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            predictions.write_parquet(out / "predictions.parquet")
            (out / "metrics.json").write_text(dumps(metrics))
        run_id = None
        if experiment is not None:
            say("logging to MLflow")
            run_id = _log(
                experiment,
                PackagedModel(model, estimator, tuple(columns), recipe or Recipe()),
                segments,
                metrics,
                scored,
                columns,
                fit_train,
                {**(tags or {}), "quarry.model": model},
                {"horizon": horizon, "label": label, "train_seconds": round(seconds, 3)},
                out,
            )
        return TrainResult(
            run_id, metrics, predictions, estimator, seconds, bool(warnings), warnings
        )


def _log(
    experiment: str,
    packaged: PackagedModel,
    segments: Segments,
    metrics: dict[str, dict[str, float]],
    scored: dict[str, pl.DataFrame],
    columns: list[str],
    fit_train: pl.DataFrame,
    tags: Mapping[str, str],
    extra: Mapping[str, Any],
    out: Path | None,
) -> str:
    import tempfile

    import mlflow

    from quarry.models._plots import ic_plot
    from quarry.tracking import experiment_id, log_packaged

    with mlflow.start_run(experiment_id=experiment_id(experiment)) as run:
        mlflow.set_tags(dict(tags))
        mlflow.log_params({k: _param(v) for k, v in packaged.estimator.params().items()})
        mlflow.log_params({f"segment_{n}": f"{a}:{b}" for n, (a, b) in segments.spans()})
        mlflow.log_params({**extra, "features": len(columns)})
        for name, values in metrics.items():
            mlflow.log_metrics(
                {f"{name}_{k}": v for k, v in values.items() if v is not None and np.isfinite(v)}
            )
        with tempfile.TemporaryDirectory() as tmp:
            folder = out or Path(tmp)
            if out is None:
                scored["test"].select(*KEYS, "score").write_parquet(folder / "predictions.parquet")
                (folder / "metrics.json").write_text(dumps(metrics))
            mlflow.log_artifact(str(folder / "predictions.parquet"))
            mlflow.log_artifact(str(folder / "metrics.json"))
            png = Path(tmp) / "ic.png"
            ic_plot(scored, png)
            mlflow.log_artifact(str(png), artifact_path="plots")
        log_packaged(packaged, fit_train.head(50))
        return str(run.info.run_id)


def _learned_nothing(
    model: Model, scored: Mapping[str, pl.DataFrame], metrics: dict[str, dict[str, float]]
) -> tuple[str, ...]:
    """The one place a model that learned nothing is detected: each segment's metrics get
    ``constant`` (True when on no day do two instruments get different scores, so IC and rank
    IC are undefined), and the warning for the user is returned (none if nothing is flat)."""
    flat = []
    for name, frame in scored.items():
        metrics[name]["constant"] = _ranks_nothing(frame)
        if metrics[name]["constant"]:
            flat.append(name)
    if not flat:
        return ()
    why = "the features may not vary across instruments"
    if isinstance(model, LightGBMModel) and not _has_split(model):
        why = (
            "LightGBM kept no tree with a split (lower lambda_l1, lambda_l2, "
            "min_gain_to_split or min_data_in_leaf), or " + why
        )
    which = flat[0] if len(flat) == 1 else f"{', '.join(flat[:-1])} and {flat[-1]}"
    return (
        f"the model learned nothing: on every day of the {which} segment"
        f"{'s' if len(flat) > 1 else ''} it gives every instrument the same score, so IC and "
        f"rank IC are undefined (null); {why}",
    )


def _ranks_nothing(scored: pl.DataFrame) -> bool:
    """No day on which two finite scores differ (beyond rounding)."""
    score = pl.col("score")
    days = (
        scored.filter(score.is_not_null() & score.is_finite())
        .group_by("date")
        .agg(spread=score.max() - score.min(), scale=score.abs().max())
    )
    return days.filter(pl.col("spread") > 1e-12 * (1.0 + pl.col("scale"))).height == 0


def _has_split(model: LightGBMModel) -> bool:
    if model.booster_ is None:
        return False
    trees = model.booster_.dump_model(num_iteration=model.best_iteration)["tree_info"]
    return any(tree["num_leaves"] > 1 for tree in trees)


@contextlib.contextmanager
def _reporter(progress: Progress | bool | None) -> Iterator[Progress]:
    """A message sink: silent, the caller's, or a rich status line (terminal or notebook)."""
    if callable(progress):
        yield progress
        return
    if not progress:
        yield lambda message: None
        return
    from rich.console import Console

    with Console(stderr=True).status("starting") as status:
        yield lambda message: status.update(message)


def _param(value: Any) -> str | int | float:
    if isinstance(value, str | int | float):
        return value
    return json.dumps(value, default=str)


def train_walk_forward(
    features: pl.DataFrame,
    schedule: WalkForward,
    *,
    label: str = "LABEL0",
    model: str = "lightgbm",
    params: Mapping[str, Any] | None = None,
    seed: int = 0,
    out: Path | None = None,
    experiment: str | None = "quarry",
    progress: Progress | bool | None = None,
    recipe: Recipe | None = None,
    executor: Executor | None = None,
) -> TrainResult:
    """Retrain on each window of ``schedule`` and predict the test window that follows it;
    the out-of-sample predictions, concatenated, are scored as one ``test`` segment.

    Each window is purged by the schedule's horizon (see ``WalkForward``) and needs
    ``valid_days`` for early stopping. The model returned (and logged, with ``recipe``) is
    the last window's.

    The windows are independent pieces run by ``executor`` (default: one after another in
    this process; ``quarry.executors.executor("ray")``: Ray tasks, each taking one CPU for
    its placement). The features go to the executor once (Ray's object store) and every
    window reads them from there. Results are the same bit for bit whichever executor runs:
    LightGBM trains deterministically, with its thread count fixed here (``num_threads``,
    default this machine's cores) rather than left to each worker; on a cluster give
    ``num_threads: 1`` so that a window uses no more than the CPU it was placed on. Only
    this process logs to MLflow. ``progress`` hears ``window 3/8 done`` as windows finish
    (and, run locally, each window's boosting rounds).
    """
    with _reporter(progress) as say:
        calendar = features["date"].unique().sort().to_list()
        windows = schedule.windows(calendar)
        if schedule.valid_days == 0:
            raise UsageError(
                "walk-forward training stops early on valid: give valid_days of 1 or more"
            )
        started = time.perf_counter()
        runner = executor or LocalExecutor()
        # A callback cannot travel to another process; locally it still hears the rounds.
        heard = say if isinstance(runner, LocalExecutor) else None
        fixed = _pinned_threads(model, params)
        pieces = [
            _WindowFit(k, len(windows), window, label, model, fixed, schedule.horizon, seed, heard)
            for k, window in enumerate(windows)
        ]
        fits: list[TrainResult] = runner.map(
            _fit_window,
            pieces,
            shared={"features": runner.share(features)},
            cpus=1,
            done=lambda n, total: say(f"window {n}/{total} done"),
        )
        last = fits[-1]
        predictions = pl.concat([fit.predictions for fit in fits]).sort(*KEYS)
        scored = predictions.join(features.select(*KEYS, label), on=list(KEYS), how="left")
        metrics = {"test": analyze(scored, score="score", label=label).as_dict()}
        warnings = _learned_nothing(last.model, {"test": scored}, metrics)
        seconds = time.perf_counter() - started
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            predictions.write_parquet(out / "predictions.parquet")
            (out / "metrics.json").write_text(dumps(metrics))
        run_id = None
        if experiment is not None:
            import mlflow

            from quarry.tracking import experiment_id, log_packaged

            with mlflow.start_run(experiment_id=experiment_id(experiment)) as run:
                mlflow.set_tags({"quarry.model": model, "quarry.schedule": "walk-forward"})
                mlflow.log_params({k: _param(v) for k, v in last.model.params().items()})
                mlflow.log_params(
                    {
                        "windows": len(windows),
                        "step": schedule.step,
                        "train_days": str(schedule.train_days),
                        "valid_days": schedule.valid_days,
                        "horizon": schedule.horizon,
                    }
                )
                mlflow.log_metrics(
                    {f"test_{k}": v for k, v in metrics["test"].items() if np.isfinite(v)}
                )
                columns = tuple(feature_columns(features, label))
                packaged = PackagedModel(model, last.model, columns, recipe or Recipe())
                log_packaged(packaged, features.head(50))
                run_id = str(run.info.run_id)
        return TrainResult(
            run_id, metrics, predictions, last.model, seconds, bool(warnings), warnings
        )


@dataclass(frozen=True)
class _WindowFit:
    """One walk-forward window as a piece for an executor: everything but the features."""

    number: int
    windows: int
    window: Window
    label: str
    model: str
    params: Mapping[str, Any] | None
    horizon: int
    seed: int
    progress: Progress | None = None


def _fit_window(piece: _WindowFit, *, features: pl.DataFrame) -> TrainResult:
    """Train one window (in this process or a Ray worker); MLflow is the caller's."""
    say = piece.progress
    if say is not None:
        first, last = piece.window.test
        say(f"window {piece.number + 1}/{piece.windows}: test {first}:{last}")
    return train(
        features, piece.window.segments(), label=piece.label, model=piece.model,
        params=piece.params, horizon=piece.horizon, seed=piece.seed, experiment=None,
        progress=say,
    )  # fmt: skip


def _pinned_threads(model: str, params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """LightGBM's parameters with its thread count decided here, once: left unset, each
    process would take its own machine's core count, and a Ray worker's machine may not be
    this one. (With ``deterministic`` and row-wise histograms LightGBM gives the same trees
    at any thread count; pinning it keeps the recorded parameters the same too.)"""
    if model != "lightgbm":
        return params
    from quarry.models._params import _lightgbm_names

    names = _lightgbm_names()
    if any(names.get(key) == "num_threads" for key in params or {}):
        return params
    return {**(params or {}), "num_threads": os.cpu_count() or 1}
