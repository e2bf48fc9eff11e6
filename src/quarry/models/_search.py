"""Hyperparameter search with Optuna: a trial budget, trials in parallel local processes,
each trial a nested MLflow run under one parent; the best parameters come back.

Trials are scored on the validation segment only (the test segment is never looked at while
searching). Processes share one Optuna study through a journal file, so that the budget is
shared too and the sampler learns from every process's trials.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import polars as pl

from quarry.exceptions import UsageError
from quarry.models._dataset import Segments

__all__ = ["DEFAULT_SPACES", "SearchResult", "search"]

# name -> (kind, low, high[, "log"]) or ("choice", [options]).
Space = Mapping[str, tuple[Any, ...]]
DEFAULT_SPACES: dict[str, dict[str, tuple[Any, ...]]] = {
    "lightgbm": {
        "learning_rate": ("float", 0.01, 0.3, "log"),
        "num_leaves": ("int", 16, 256),
        "max_depth": ("int", 3, 10),
        "lambda_l1": ("float", 1e-3, 1e3, "log"),
        "lambda_l2": ("float", 1e-3, 1e3, "log"),
        "colsample_bytree": ("float", 0.5, 1.0),
        "subsample": ("float", 0.5, 1.0),
    },
    "linear": {"kind": ("choice", ["ridge", "lasso"])},
}


@dataclass(frozen=True)
class SearchResult:
    """The best parameters and validation score, the parent MLflow run, every trial."""

    best_params: dict[str, Any]
    best_value: float
    parent_run_id: str | None
    trials: list[dict[str, Any]]


def _suggest(trial: Any, space: Space) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "float":
            params[name] = trial.suggest_float(name, spec[1], spec[2], log="log" in spec[3:])
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec[1], spec[2], log="log" in spec[3:])
        elif kind == "choice":
            params[name] = trial.suggest_categorical(name, list(spec[1]))
        else:
            raise UsageError(
                f"search space {name!r}: kind {kind!r} is not float, int or choice "
                "(write e.g. learning_rate: [float, 0.01, 0.3, log])"
            )
    return params


def _worker(
    storage_path: str,
    study_name: str,
    features_path: str,
    segments: Segments,
    model: str,
    space: Space,
    fixed: Mapping[str, Any],
    horizon: int,
    seed: int,
    metric: str,
    budget: int,
    parent: tuple[str, str] | None,
    on_trial: Callable[[Any], None] | None = None,
) -> None:
    """One process's share of the trials, ``budget`` of them, in the shared study."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from quarry.models._train import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    frame = pl.read_parquet(features_path)
    storage = JournalStorage(JournalFileBackend(storage_path))
    study = optuna.load_study(study_name=study_name, storage=storage)

    def objective(trial: Any) -> float:
        params = {**fixed, **_suggest(trial, space)}
        result = train(
            frame, segments, model=model, params=params, horizon=horizon, seed=seed,
            experiment=None,
        )  # fmt: skip
        value = result.metrics["valid"][metric]
        if parent is not None:
            _log_trial(parent, trial.number, params, result.metrics["valid"])
        return value if math.isfinite(value) else -math.inf

    callbacks = [lambda study, trial: on_trial(study)] if on_trial is not None else []
    study.optimize(objective, n_trials=budget, callbacks=callbacks)


def _report_trials(
    study: Any, budget: int, metric: str, reported: set[int], progress: Callable[[str], None]
) -> None:
    """A line for each trial of ``study`` finished since the last call, in order."""
    finished = sorted(
        (t for t in study.trials if t.state.is_finished()), key=lambda t: t.datetime_complete
    )
    best = -math.inf
    for count, trial in enumerate(finished, 1):
        value = trial.value if trial.value is not None else -math.inf
        best = max(best, value)
        if trial.number in reported:
            continue
        reported.add(trial.number)
        shown = f"{value:.4f}" if math.isfinite(value) else "undefined"
        best_shown = f"{best:.4f}" if math.isfinite(best) else "undefined"
        progress(f"trial {count}/{budget}: {metric} {shown}, best {best_shown}")


def _log_trial(
    parent: tuple[str, str], number: int, params: Mapping[str, Any], valid: Mapping[str, float]
) -> None:
    """A nested MLflow run for one trial (the parent run id tag makes it nested)."""
    import mlflow

    from quarry.tracking import client

    experiment_id, parent_id = parent
    client()
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"trial-{number}",
        tags={"mlflow.parentRunId": parent_id, "quarry.trial": str(number)},
    ):
        mlflow.log_params({k: str(v) for k, v in params.items()})
        mlflow.log_metrics({f"valid_{k}": v for k, v in valid.items() if math.isfinite(v)})


def search(
    features: pl.DataFrame,
    segments: Segments,
    *,
    model: str = "lightgbm",
    space: Space | None = None,
    fixed: Mapping[str, Any] | None = None,
    trials: int = 20,
    jobs: int = 1,
    horizon: int = 2,
    seed: int = 0,
    metric: str = "rank_ic",
    experiment: str | None = "quarry",
    progress: Callable[[str], None] | None = None,
) -> SearchResult:
    """Search ``model``'s parameters over ``space`` (default: ``DEFAULT_SPACES[model]``),
    ``trials`` trials in ``jobs`` processes, maximizing the validation ``metric``.

    ``progress`` hears a line as each trial finishes, e.g. ``trial 3/20: rank_ic 0.041,
    best 0.052`` (from the processes' shared study, polled each second, when ``jobs`` > 1).
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials < 1 or jobs < 1:
        raise UsageError(f"give at least one trial and one job, not trials={trials} jobs={jobs}")
    space = space if space is not None else DEFAULT_SPACES.get(model)
    if not space:
        raise UsageError(f"no search space for model {model!r}: give one")
    with tempfile.TemporaryDirectory(prefix="quarry-search-") as tmp:
        features_path = str(Path(tmp) / "features.parquet")
        features.write_parquet(features_path)
        storage_path = str(Path(tmp) / "study.log")
        storage = JournalStorage(JournalFileBackend(storage_path))
        sampler = optuna.samplers.TPESampler(seed=seed)
        study = optuna.create_study(
            study_name="search", storage=storage, direction="maximize", sampler=sampler
        )
        parent_id = None
        parent: tuple[str, str] | None = None
        if experiment is not None:
            import mlflow

            from quarry.tracking import experiment_id

            eid = experiment_id(experiment)
            with mlflow.start_run(experiment_id=eid, run_name=f"search-{model}") as run:
                mlflow.log_params({"model": model, "trials": trials, "jobs": jobs})
                parent_id = str(run.info.run_id)
            parent = (eid, parent_id)
        args = (storage_path, "search", features_path, segments, model, space, dict(fixed or {}))
        rest = (horizon, seed, metric)
        # The budget split exactly between the processes (a shared counter would let the
        # last trials overshoot); they still share one study, so the sampler sees them all.
        shares = [trials // jobs + (1 if k < trials % jobs else 0) for k in range(jobs)]
        shares = [share for share in shares if share]
        reported: set[int] = set()

        def report(current: Any) -> None:
            if progress is not None:
                _report_trials(current, trials, metric, reported, progress)

        if len(shares) == 1:
            _worker(*args, *rest, shares[0], parent, report)
        else:
            with ProcessPoolExecutor(len(shares), mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_worker, *args, *rest, share, parent) for share in shares]
                while progress is not None and not all(f.done() for f in futures):
                    time.sleep(1.0)
                    report(optuna.load_study(study_name="search", storage=storage))
                for done in futures:
                    done.result()
            report(optuna.load_study(study_name="search", storage=storage))
        study = optuna.load_study(study_name="search", storage=storage, sampler=sampler)
        finished = [t for t in study.trials if t.value is not None and math.isfinite(t.value)]
        if not finished:
            raise UsageError(f"no trial gave a finite validation {metric}: widen the space")
        best = max(finished, key=lambda t: t.value or -math.inf)
        history = [{"number": t.number, "params": t.params, "value": t.value} for t in finished]
    best_params = {**(fixed or {}), **best.params}
    if parent_id is not None:
        import mlflow

        with mlflow.start_run(run_id=parent_id):
            mlflow.log_params({f"best_{k}": str(v) for k, v in best.params.items()})
            mlflow.log_metric(f"best_valid_{metric}", float(best.value or 0.0))
    return SearchResult(best_params, float(best.value or 0.0), parent_id, history)
