"""Hyperparameter search with Optuna: a trial budget spent in batches on an executor, each
trial a nested MLflow run under one parent; the best parameters come back.

The study lives in the calling process. It asks for a batch of ``jobs`` trials, the executor
evaluates the batch (one after another here, or as Ray tasks on a cluster), and the results
are told back in trial order before the next batch is asked for. The sampler therefore sees
the same history at every ask whatever executor ran the trials, so the search is a function
of the seed, the batch size and the data: the local and the Ray executor find the same best
parameters, value and trial history, bit for bit. Within a batch the sampler counts the
trials still running as bad ones (Optuna's constant liar), so a batch spreads out instead of
proposing one point ``jobs`` times.

Trials are scored on the validation segment only: the test segment is never read while
searching (nor shipped to the workers). A trial fits exactly as ``train`` does (the same
rows, label normalisation, early stopping and seed), so re-training the best parameters with
``train`` gives the recorded validation score. Tasks never touch MLflow: the calling process
logs each batch's nested runs after the batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from quarry.exceptions import LookaheadError, UsageError
from quarry.executors import Executor, LocalExecutor
from quarry.models._dataset import Segments
from quarry.models._params import validate_params

__all__ = ["DEFAULT_SPACES", "SEARCH_METRICS", "SearchResult", "parse_space", "search"]

# name -> (kind, low, high[, "log"]) or ("choice", [options]).
Space = Mapping[str, Sequence[Any]]
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
# Validation figures worth maximizing (``SignalReport.as_dict``; turnover and autocorrelation
# are not better when higher).
SEARCH_METRICS = ("rank_ic", "ic", "rank_icir", "icir", "rank_ic_t", "ic_t", "long_short_mean")
_FORMS = "[float, LOW, HIGH], [int, LOW, HIGH] (either with a 4th item log) or [choice, [A, B]]"
_KEYS = ("instrument", "date")


@dataclass(frozen=True)
class SearchResult:
    """The best parameters (fixed ones included) and their validation score, the parent
    MLflow run, and every trial in order: ``{"number" (from 1, as progress and the MLflow
    run names count), "params" (the searched ones), "value" (None when undefined), "valid"
    (every validation figure)}``."""

    best_params: dict[str, Any]
    best_value: float
    parent_run_id: str | None
    trials: list[dict[str, Any]]


# -- the space -------------------------------------------------------------------------------


def _number(value: Any, whole: bool) -> bool:
    if isinstance(value, bool):
        return False
    if whole:
        return isinstance(value, int)
    return isinstance(value, int | float) and math.isfinite(value)


def _parse_one(name: Any, spec: Any) -> tuple[Any, ...]:
    where = f"search space key {name!r}"
    if not isinstance(name, str) or not name:
        raise UsageError(f"{where}: a parameter name must be text")
    if isinstance(spec, str | bytes) or not isinstance(spec, Sequence) or not spec:
        raise UsageError(f"{where}: {spec!r} is not a range or a choice; write {_FORMS}")
    kind, *rest = spec
    shown = list(spec)
    if kind == "choice":
        options = rest[0] if len(rest) == 1 else None
        if isinstance(options, str | bytes) or not isinstance(options, Sequence) or not options:
            raise UsageError(f"{where}: write [choice, [A, B, ...]] (at least one), not {shown!r}")
        for option in options:
            if option is not None and not isinstance(option, str | int | float):
                raise UsageError(
                    f"{where}: option {option!r} is not a number, text, true/false or null"
                )
            if isinstance(option, float) and not math.isfinite(option):
                raise UsageError(f"{where}: option {option!r} is not a finite number")
        if len({repr(o) for o in options}) != len(options):
            raise UsageError(f"{where}: an option is given twice in {list(options)!r}")
        return ("choice", list(options))
    if kind in ("float", "int"):
        if len(rest) not in (2, 3) or (len(rest) == 3 and rest[2] != "log"):
            raise UsageError(
                f"{where}: write [{kind}, LOW, HIGH] or [{kind}, LOW, HIGH, log], not {shown!r}"
            )
        low, high = rest[0], rest[1]
        for which, value in (("low", low), ("high", high)):
            if not _number(value, kind == "int"):
                what = "a whole number" if kind == "int" else "a finite number"
                raise UsageError(f"{where}: {which} {value!r} is not {what}")
        if low >= high:
            raise UsageError(
                f"{where}: low {low} is not below high {high}; give LOW < HIGH (a value that "
                "should not vary goes with the fixed parameters)"
            )
        log = len(rest) == 3
        least = 1 if kind == "int" else 0
        if log and (low < least if kind == "int" else low <= 0):
            raise UsageError(
                f"{where}: a log range needs low {'1 or more' if least else 'above 0'}, not {low}"
            )
        cast = int if kind == "int" else float
        return (kind, cast(low), cast(high), *(("log",) if log else ()))
    raise UsageError(f"{where}: kind {kind!r} is not float, int or choice; write {_FORMS}")


def parse_space(
    space: Mapping[str, Any],
    *,
    model: str | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> dict[str, tuple[Any, ...]]:
    """A search space checked and normalised: ``name: [float, low, high(, log)]``,
    ``[int, low, high(, log)]`` or ``[choice, [options]]`` (lists or tuples, as YAML or
    Python write them).

    With ``model``, every name must be one of the model's parameters and the ends of each
    range (each option) values the model takes alongside ``fixed``; a name may not be both
    searched and fixed.

    Raises UsageError naming the key, what is wrong with it, and what to write.

    Examples
    --------
    >>> parse_space({"num_leaves": ["int", 8, 64], "learning_rate": ["float", 0.01, 0.3, "log"]})
    {'num_leaves': ('int', 8, 64), 'learning_rate': ('float', 0.01, 0.3, 'log')}
    """
    if not isinstance(space, Mapping):
        raise UsageError(
            f"a search space is a mapping of 'name: {_FORMS}', not {type(space).__name__}"
        )
    if not space:
        raise UsageError(f"the search space is empty; give at least one 'name: {_FORMS}'")
    out = {name: _parse_one(name, spec) for name, spec in space.items()}
    if model is not None:
        given = dict(fixed or {})
        for name, spec in out.items():
            if name in given:
                raise UsageError(
                    f"search space key {name!r} is also a fixed parameter; search it or fix it"
                )
            for value in spec[1] if spec[0] == "choice" else spec[1:3]:
                try:
                    validate_params(model, {**given, name: value})
                except UsageError as exc:
                    raise UsageError(f"search space key {name!r}: {exc}") from None
    return out


def _distributions(space: Mapping[str, tuple[Any, ...]]) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for name, spec in space.items():
        if spec[0] == "choice":
            out[name] = CategoricalDistribution(spec[1])
        elif spec[0] == "int":
            out[name] = IntDistribution(spec[1], spec[2], log="log" in spec[3:])
        else:
            out[name] = FloatDistribution(spec[1], spec[2], log="log" in spec[3:])
    return out


# -- one trial (run by the executor) ----------------------------------------------------------


@dataclass(frozen=True)
class _Trial:
    """What a task needs besides the shared frame: small, pickled with each trial."""

    number: int
    params: dict[str, Any]
    model: str
    label: str
    columns: tuple[str, ...]
    train: tuple[Any, Any]
    valid: tuple[Any, Any]
    seed: int
    threads: int | None  # LightGBM's threads when the executor gives a trial fewer CPUs


def _evaluate(trial: _Trial, *, frame: pl.DataFrame) -> dict[str, float]:
    """Fit on train, early-stop on valid and score valid, as ``train`` does (its own helpers
    on the same rows in the same order), without scoring the other segments."""
    from quarry.models._estimators import make_model
    from quarry.models._params import lightgbm_params
    from quarry.models._train import _learnable, _matrix
    from quarry.signals import analyze

    label, columns = trial.label, list(trial.columns)
    day = pl.col("date").cast(pl.Date)
    rows = {
        name: frame.filter(day.is_between(*span, closed="both"))
        for name, span in (("train", trial.train), ("valid", trial.valid))
    }
    params = dict(trial.params)
    if trial.model == "lightgbm" and trial.threads is not None:
        # One thread per CPU the task was given: a batch of trials each running on every
        # core of a node would oversubscribe it. LightGBM's deterministic mode gives the same
        # trees whatever the thread count, so this does not change the result.
        if "num_threads" not in lightgbm_params(params)[0]:
            params["num_threads"] = trial.threads
    estimator = make_model(trial.model, params, seed=trial.seed)
    fit_train, fit_valid = _learnable(rows["train"], label), _learnable(rows["valid"], label)
    estimator.fit(
        _matrix(fit_train, columns),
        fit_train[label].to_numpy(),
        _matrix(fit_valid, columns),
        fit_valid[label].to_numpy(),
    )
    valid = rows["valid"]
    score = estimator.predict(_matrix(valid, columns))
    scored = valid.select(*_KEYS, pl.Series("score", score, dtype=pl.Float64), label)
    return analyze(scored, score="score", label=label).as_dict()


# -- checks before anything runs ---------------------------------------------------------------


def _check_data(
    features: pl.DataFrame, segments: Segments, label: str, horizon: int
) -> tuple[pl.DataFrame, list[str]]:
    """The rows and columns trials need (train and valid only), after refusing what would
    fail in every trial: missing columns, no valid segment, a leaking gap, empty segments."""
    from quarry.models._train import feature_columns

    for column in (*_KEYS, label):
        if column not in features.columns:
            shown = ", ".join(features.columns[:12]) + (", ..." if features.width > 12 else "")
            raise UsageError(f"the features have no {column!r} column (columns: {shown})")
    if not isinstance(features.schema["date"], pl.Date | pl.Datetime):
        raise UsageError(
            f"the features' date column holds {features.schema['date']}, not dates; give it "
            "as a date column, as quarry features compute writes it"
        )
    columns = feature_columns(features, label)
    if not columns:
        raise UsageError("the features have no numeric feature column besides the label")
    if segments.valid is None:
        raise UsageError("search scores each trial on the valid segment: give one (--valid)")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
        raise UsageError(f"horizon must be a whole number of trading days, not {horizon!r}")
    day = pl.col("date").cast(pl.Date)
    days = features.select(day.unique().sort().drop_nulls())["date"].to_list()
    if not days:
        raise UsageError("the features hold no rows")
    found = {}
    for name, (first, last) in (("train", segments.train), ("valid", segments.valid)):
        inside = [d for d in days if first <= d <= last]
        if not inside:
            raise UsageError(
                f"the {name} segment {first}:{last} holds no rows of the features, which run "
                f"{days[0]} to {days[-1]}"
            )
        found[name] = (days.index(inside[0]), days.index(inside[-1]))
    gap = found["valid"][0] - found["train"][1] - 1
    if gap < horizon:
        latest = days[found["valid"][0] - horizon - 1] if found["valid"][0] > horizon else None
        fix = f"end train on or before {latest}" if latest is not None else "start valid later"
        train, valid = segments.train, segments.valid
        raise LookaheadError(
            f"train ({train[0]}:{train[1]}) and valid ({valid[0]}:{valid[1]}) have {gap} "
            f"trading day(s) between them, but the label reads {horizon} day(s) ahead, so the "
            f"last train labels overlap valid; leave at least {horizon}: {fix}"
        )
    wanted = day.is_between(*segments.train, closed="both") | day.is_between(
        *segments.valid, closed="both"
    )
    return features.filter(wanted).select(*_KEYS, *columns, label), columns


# -- MLflow (the calling process only) ---------------------------------------------------------


def _open_parent(experiment: str, model: str, settings: Mapping[str, Any]) -> tuple[str, str]:
    from mlflow.entities import Param

    from quarry.tracking import client, experiment_id

    eid = experiment_id(experiment)
    mlflow_client = client()
    run = mlflow_client.create_run(eid, run_name=f"search-{model}", tags={"quarry.search": model})
    params = [Param(k, str(v)) for k, v in settings.items()]
    mlflow_client.log_batch(run.info.run_id, params=params)
    return eid, str(run.info.run_id)


def _log_trial(
    parent: tuple[str, str], number: int, params: Mapping[str, Any], valid: Mapping[str, float]
) -> None:
    """A nested MLflow run for one trial (the parent run id tag makes it nested)."""
    import time

    from mlflow.entities import Metric, Param

    from quarry.tracking import client

    experiment_id, parent_id = parent
    mlflow_client = client()
    run = mlflow_client.create_run(
        experiment_id,
        run_name=f"trial-{number}",
        tags={"mlflow.parentRunId": parent_id, "quarry.trial": str(number)},
    )
    now = int(time.time() * 1000)
    mlflow_client.log_batch(
        run.info.run_id,
        metrics=[Metric(f"valid_{k}", v, now, 0) for k, v in valid.items() if math.isfinite(v)],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    mlflow_client.set_terminated(run.info.run_id)


def _close_parent(
    parent_id: str, best_params: Mapping[str, Any], metric: str, value: float
) -> None:
    import time

    from mlflow.entities import Metric, Param

    from quarry.tracking import client

    mlflow_client = client()
    mlflow_client.log_batch(
        parent_id,
        metrics=[Metric(f"best_valid_{metric}", value, int(time.time() * 1000), 0)],
        params=[Param(f"best_{k}", str(v)) for k, v in best_params.items()],
    )
    mlflow_client.set_terminated(parent_id)


# -- the search ---------------------------------------------------------------------------------


def _shown(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "undefined"


def search(
    features: pl.DataFrame,
    segments: Segments,
    *,
    model: str = "lightgbm",
    space: Space | None = None,
    fixed: Mapping[str, Any] | None = None,
    trials: int = 20,
    jobs: int | None = None,
    horizon: int = 2,
    seed: int = 0,
    metric: str = "rank_ic",
    experiment: str | None = "quarry",
    progress: Callable[[str], None] | None = None,
    executor: Executor | None = None,
    label: str = "LABEL0",
) -> SearchResult:
    """Search ``model``'s parameters over ``space`` (default: ``DEFAULT_SPACES[model]``),
    ``trials`` trials in batches of ``jobs``, maximizing the validation ``metric``.

    Parameters
    ----------
    features
        instrument, date, feature columns and ``label``, as ``train`` takes them; only the
        train and valid segments' rows are used (``segments.test`` is never read).
    space
        ``name: (kind, ...)`` as ``parse_space`` reads it; ``fixed``: parameters every trial
        shares (e.g. ``num_boost_round``).
    jobs
        Trials asked for at once and evaluated together (default: the executor's
        ``workers``, 1 for the local executor). The result depends on it, not on the
        executor: give it to reproduce a search elsewhere.
    executor
        Where trials run (default: the local executor, one trial after another in this
        process). On Ray each trial is a task of one CPU, LightGBM training it on one thread,
        and the features are put in the object store once.
    progress
        Hears ``trial 3/20: rank_ic 0.0410, best 0.0520`` for each trial in order once its
        batch is done, and ``running trials 5-8 of 20: 2/4 done`` while a batch runs.

    Raises UsageError before anything runs for an unknown model or metric, a bad space or
    fixed parameter, or features and segments no trial could use; and when no trial gave a
    finite validation score.
    """
    import optuna

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise UsageError(f"give at least one trial, not trials={trials!r}")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise UsageError(f"give at least one job (trials at once), not jobs={jobs!r}")
    validate_params(model, None)  # the model's name first
    if metric not in SEARCH_METRICS:
        raise UsageError(f"metric {metric!r}: choose one of {', '.join(SEARCH_METRICS)}")
    try:
        fixed = validate_params(model, fixed or {})
    except UsageError as exc:
        raise UsageError(f"fixed parameters: {exc}") from None
    if space is None:
        space = DEFAULT_SPACES.get(model)
        if space is None:
            raise UsageError(f"no default search space for model {model!r}: give one (--space)")
    parsed = parse_space(space, model=model, fixed=fixed)
    frame, columns = _check_data(features, segments, label, horizon)
    assert segments.valid is not None  # checked above

    runner = executor if executor is not None else LocalExecutor()
    batch = jobs if jobs is not None else runner.workers
    threads = None if isinstance(runner, LocalExecutor) else 1
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    distributions = _distributions(parsed)
    say = progress or (lambda message: None)

    parent: tuple[str, str] | None = None
    if experiment is not None:
        settings = {"model": model, "trials": trials, "jobs": batch, "seed": seed,
                    "metric": metric, "executor": runner.name}  # fmt: skip
        parent = _open_parent(experiment, model, settings)
    history: list[dict[str, Any]] = []
    best = -math.inf
    try:
        shared = {"frame": runner.share(frame)}
        while len(history) < trials:
            asked = [study.ask(distributions) for _ in range(min(batch, trials - len(history)))]
            work = [
                _Trial(t.number + 1, {**fixed, **t.params}, model, label, tuple(columns),
                       segments.train, segments.valid, seed, threads)
                for t in asked
            ]  # fmt: skip
            first, last = asked[0].number + 1, asked[-1].number + 1
            span = f"trial {first}" if first == last else f"trials {first}-{last}"

            def done(count: int, total: int, span: str = span) -> None:
                say(f"running {span} of {trials}: {count}/{total} done")

            results = runner.map(_evaluate, work, shared=shared, cpus=1.0, done=done)
            for trial, piece, valid in zip(asked, work, results, strict=True):
                value, number = float(valid[metric]), trial.number + 1
                # An undefined score (a model that ranks nothing) is the worst, not a failure:
                # the sampler learns to avoid where it came from.
                study.tell(trial, value if math.isfinite(value) else -math.inf)
                best = max(best, value) if math.isfinite(value) else best
                history.append({
                    "number": number,
                    "params": dict(trial.params),
                    "value": value if math.isfinite(value) else None,
                    "valid": dict(valid),
                })  # fmt: skip
                if parent is not None:
                    _log_trial(parent, number, piece.params, valid)
                say(f"trial {number}/{trials}: {metric} {_shown(value)}, "
                    f"best {_shown(best)}")  # fmt: skip
    except BaseException as exc:
        if parent is not None:
            from quarry.tracking import client

            status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
            client().set_terminated(parent[1], status=status)
        raise
    finished = [t for t in history if t["value"] is not None]
    if not finished:
        if parent is not None:
            from quarry.tracking import client

            client().set_terminated(parent[1], status="FAILED")
        raise UsageError(
            f"no trial of {trials} gave a finite validation {metric}: every model scored the "
            "instruments alike on the valid days; check the label varies across instruments, "
            "widen the space or give more trials"
        )
    top = max(finished, key=lambda t: t["value"])  # the first of equals: the earliest
    best_params = {**fixed, **top["params"]}
    if parent is not None:
        _close_parent(parent[1], top["params"], metric, top["value"])
    return SearchResult(best_params, top["value"], parent[1] if parent else None, history)
