"""Running a workflow: features -> train and predict -> signal analysis -> backtest -> report
-> tracking -> the promotion gate, each step reused from the step cache when its inputs have
not changed.

Keys (see ``_cache``):
- features: the store's state for the read (bars, corporate actions, fundamentals, universe
  commits known at ``as_of``), the expressions, the label and the dates;
- train: the features key, the processors, the model, the schedule and the tracking
  settings (the experiment, the registered model and the metadata given for it: a version's
  metadata is what it was registered with, so a new description trains a new version);
- backtest: the train key and the backtest's settings (the market is the features' store
  state);
- gate: the train and backtest keys, the rules, and the champion's version when it runs.

A cached train step keeps its MLflow run and its registered version, so a rerun neither
logs a second run nor registers the model twice. The version is registered with its metadata
(``quarry.tracking.model_metadata``): the tracking section's description, authors, licence
and project, the features, the training window, the store and the commits the features
were computed from, the workflow file and its SHA-256; its metrics are the run's, brought
up to date at the end of every run (the backtest and the gate log theirs into the run).

Where the steps' independent pieces run (``execution.executor``, ``quarry run --executor``)
is in no key: feature chunks, walk-forward windows and search trials give the same results
locally and as Ray tasks, so a step cached by one executor serves the other. The executor is
started only when a step has pieces to run (a run served from the cache starts no Ray).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from quarry._json import dumps, strict_json
from quarry.exceptions import UsageError
from quarry.executors import EXECUTORS, Executor
from quarry.executors import executor as make_executor
from quarry.workflows._backtest import backtest
from quarry.workflows._cache import StepCache, digest
from quarry.workflows._spec import DataSpec, TrackingSpec, Workflow

__all__ = ["EXECUTORS", "RunResult", "run_workflow"]

RESULT_KEYS = ("ic", "icir", "rank_ic", "rank_icir")
BACKTEST_KEYS = ("annualized_return", "excess_annualized_return", "information_ratio",
                 "max_drawdown", "sharpe", "turnover", "orders_filled",
                 "days_without_position")  # fmt: skip

Say = Callable[[str], None]


@dataclass
class RunResult:
    results: dict[str, Any]
    steps: dict[str, str] = field(default_factory=dict)  # step -> "ran" or "cached"

    def _repr_html_(self) -> str:
        """A notebook's view: the results' figures, the gate's decision, the model version
        and MLflow run, the steps run or cached, warnings and notes (``_html_view``)."""
        from quarry.workflows._html_view import run_html

        return run_html(self.results, self.steps)


def _store(spec: Workflow) -> Any:
    from quarry.data import Store
    from quarry.settings import default_store

    return Store(spec.data.store or default_store())


def _expressions(spec: Workflow) -> dict[str, str]:
    from quarry.features import FEATURE_SETS

    exprs = dict(FEATURE_SETS[spec.features.set]()) if spec.features.set != "none" else {}
    exprs.update(spec.features.extra)
    if not exprs:
        raise UsageError("the workflow has no features: give features.set or features.extra")
    return exprs


def _values_read(state: Any, exprs: dict[str, str]) -> dict[str, Any]:
    """The commits of the tables the features' values read: the stories, their scores and
    each scorer's version only when an expression reads a text field (a new story or word
    list computes those features anew; a run without them does not notice)."""
    from quarry.data._text_fields import TextField, is_text_field
    from quarry.features import parse

    fields = {n.name for e in exprs.values() for n in parse(e).walk() if n.op == "$"}
    text = [TextField.parse(f) for f in sorted(fields) if is_text_field(f)]
    values = {k: v for k, v in state.value_tables.items() if k not in ("events", "event_scores")}
    if text:
        values["events"] = state.value_tables.get("events")
        values["event_scores"] = state.value_tables.get("event_scores")
        scorers = sorted({f.scorer for f in text if f.scorer})
        values["scorers"] = {s: state.scorer_versions[s] for s in scorers}
    return values


class _Executor:
    """The run's executor, started the first time a step has pieces to run, and the name
    it goes by in results.json."""

    def __init__(self, spec: Workflow, name: str | None, address: str | None) -> None:
        self.name = name or spec.execution.executor
        if self.name not in EXECUTORS:
            raise UsageError(f"--executor {self.name!r}: choose one of {', '.join(EXECUTORS)}")
        # the flag replaces the file's address; the file's goes only with the file's executor
        given = address is not None
        if not given and self.name == spec.execution.executor:
            address = spec.execution.ray_address
        if self.name == "local" and address is not None:
            raise UsageError("--ray-address goes with --executor ray, not with local")
        self.address, self._from_file = address, not given and address is not None
        self._started: Executor | None = None

    def __call__(self) -> Executor:
        if self._started is None:
            try:
                self._started = make_executor(self.name, address=self.address)
            except UsageError as exc:
                text = str(exc)
                if self._from_file and text.startswith("--ray-address "):
                    text = "execution.ray_address " + text.removeprefix("--ray-address ")
                    raise UsageError(text) from None
                raise
        return self._started

    def close(self) -> None:
        if self._started is not None:
            self._started.close()
            self._started = None


def run_workflow(
    spec: Workflow,
    out: Path,
    *,
    force: bool = False,
    executor: str | None = None,
    ray_address: str | None = None,
    cache: StepCache | None = None,
    say: Say | None = None,
    progress: Say | None = None,
) -> RunResult:
    """Run ``spec`` and write ``out``/results.json and report.html.

    ``executor`` (``local`` or ``ray``) and ``ray_address`` replace the file's
    ``execution`` settings; results are the same with either executor. ``say`` hears each
    step as it starts, how long it ran (``features: ran in 12.3 s``) or that it was found in
    the cache (``train: cached``); ``progress`` the steps' finer messages (boosting rounds
    with the best validation loss so far, penalties, windows, trials)."""
    pieces = _Executor(spec, executor, ray_address)
    try:
        return _run(spec, out, force, pieces, cache, say, progress)
    finally:
        pieces.close()


def _run(
    spec: Workflow,
    out: Path,
    force: bool,
    pieces: _Executor,
    cache: StepCache | None,
    say: Say | None,
    progress: Say | None,
) -> RunResult:
    from quarry.data._store import to_utc
    from quarry.features._cache import _commit_state, data_state

    if spec.tracking.registered and spec.source is None:
        raise UsageError(
            "tracking.register: a model's metadata names the workflow file that made it and "
            "its SHA-256; read the workflow with quarry.workflows.load_workflow"
        )
    cache = cache or StepCache()
    say = say or (lambda message: None)
    detail = progress or (lambda message: None)
    store = _store(spec)
    store.require()
    d = spec.data
    state = data_state(store, as_of=d.as_of, universe=d.universe, start=d.start, end=d.end)
    # the commits the features key was made from, for the model's metadata (read right
    # after them: an ingest in between is a window of milliseconds)
    commits = _commits(store, d) if spec.tracking.registered else {}
    run = RunResult({})

    def step(
        name: str,
        key: str,
        work: Callable[[Path, dict[str, Any]], None],
        still_true: Callable[[dict[str, Any]], bool] = lambda record: True,
    ) -> Path:
        hit = None if force else cache.get(name, key)
        stale = hit is not None and not still_true(hit[1])
        if stale:
            hit = None  # what the entry did is no longer so: run the step again
        if hit is not None:
            run.steps[name] = "cached"
            say(f"{name}: cached")
            records[name] = hit[1]
            return hit[0]
        say(f"{name}: running")
        started = time.perf_counter()
        fresh: dict[str, Any] = {"key": key}
        with cache.put(name, key, fresh, replace=force or stale) as folder:
            work(folder, fresh)
        run.steps[name] = "ran"
        say(f"{name}: ran in {time.perf_counter() - started:.1f} s")
        records[name] = fresh
        return cache.root / name / key

    records: dict[str, dict[str, Any]] = {}
    exprs = _expressions(spec)
    values = _values_read(state, exprs)
    features_key = digest({"rows": state.rows_key, "values": values,
                           "exprs": exprs, "label": spec.label})  # fmt: skip

    def features(folder: Path, record: dict[str, Any]) -> None:
        from quarry.features import FeatureCache, materialize

        done = materialize(
            store, exprs, folder / "features.parquet", label=spec.label, universe=d.universe,
            as_of=d.as_of, start=d.start, end=d.end, memory=spec.features.memory,
            cache=FeatureCache(), executor=pieces(),
            progress=lambda what, n, total: detail(f"features: {what} {n}/{total}"),
        )  # fmt: skip
        record["rows"] = done.rows

    features_dir = step("features", features_key, features)
    from quarry.tracking import tracking_uri

    # The tracking store is part of the key: a cached run id and version belong to it. (A
    # search is added only when there is one, so keys made before it existed still hold.)
    searched = {"search": spec.section("search")} if spec.search is not None else {}
    train_key = digest({"features": features_key, "processors": spec.features.processors,
                        "model": spec.section("model"), "segments": spec.segments,
                        "walk_forward": spec.section("walk_forward"),
                        "tracking": _tracking_key(spec), "uri": tracking_uri(),
                        **searched})  # fmt: skip

    def train_step(folder: Path, record: dict[str, Any]) -> None:
        fitted = _train(spec, features_dir / "features.parquet", folder, detail, pieces)
        result, window = fitted.result, fitted.segments.test
        if fitted.found is not None:
            record["search"] = fitted.found
        record["run_id"] = result.run_id
        record["metrics"] = result.metrics
        record["warnings"] = list(result.warnings)
        record["window"] = [str(window[0]), str(window[1])]
        if spec.tracking.registered and result.run_id:
            from quarry.tracking import register

            metadata = _metadata(spec, store, commits, fitted)
            record["version"] = register(result.run_id, spec.tracking.registered, metadata)

    train_dir = step("train", train_key, train_step)
    trained = records["train"]
    # The industries (instruments table) decide the optimizer's limits and the exposure.
    industries = _commit_state(store, "instruments", to_utc(d.as_of))
    backtest_key = digest({"train": train_key, "backtest": spec.section("backtest"),
                           "market": state.rows_key, "values": values,
                           "industries": industries})  # fmt: skip

    def backtest_step(folder: Path, record: dict[str, Any]) -> None:
        path = train_dir / "predictions.parquet"
        result = backtest(spec, store, pl.read_parquet(path), folder, source=str(path))
        record["metrics"] = result.metrics
        record["warnings"], record["notes"] = list(result.warnings), list(result.notes)
        if trained.get("run_id"):
            _log_backtest(trained["run_id"], result.metrics, folder)

    backtest_dir = step("backtest", backtest_key, backtest_step)
    gate: dict[str, Any] = {"promoted": False, "reason": "no registered model (tracking.register)"}
    if spec.tracking.registered and trained.get("version") is not None:
        from quarry.tracking import alias_version

        champion = alias_version(spec.tracking.registered, spec.gate.alias)
        gate_key = digest({"train": train_key, "backtest": backtest_key, "champion": champion,
                           "gate": spec.section("gate")})  # fmt: skip

        def gate_step(folder: Path, record: dict[str, Any]) -> None:
            from quarry.workflows._gate import decide

            decision = decide(spec, store, features_dir / "features.parquet", trained,
                              champion, train_dir / "predictions.parquet")  # fmt: skip
            record.update(decision)
            (folder / "gate.json").write_text(dumps(decision))

        # A promotion is a fact in the registry, not only in the cache: if the alias was
        # moved since (by hand, say), the decision is made again.
        ours = trained["version"]
        step("gate", gate_key, gate_step,
             still_true=lambda r: not r.get("promoted") or champion == ours)  # fmt: skip
        gate = {k: v for k, v in records["gate"].items() if k != "key"}
        # A marker (by the gate's key, which holds the training's and the backtest's) says
        # these steps' figures reached the version's metadata: when every step was cached
        # and it is there, nothing was logged since, and MLflow is not even imported.
        # (Without it, say after a sync that failed, the sync is made again.)
        synced = cache.root / "synced" / gate_key
        if any(how != "cached" for how in run.steps.values()) or not synced.exists():
            from quarry.tracking import sync_metrics

            # the backtest and the gate logged their figures into the version's run
            sync_metrics(spec.tracking.registered, trained["version"])
            synced.parent.mkdir(parents=True, exist_ok=True)
            synced.touch()
            # Read the champion once more after this run's last write to the registry, so
            # that the registry memo holds it for the next run.
            alias_version(spec.tracking.registered, spec.gate.alias)
    results = _results(spec, trained, records["backtest"], gate, run.steps, pieces.name)
    _write(out, results, backtest_dir, train_dir)
    run.results = results
    return run


@dataclass(frozen=True)
class _Trained:
    """A training's result, the segments of the model it logged (for a walk-forward
    schedule, the last window's), what the search found, and the features it reads."""

    result: Any
    segments: Any
    found: dict[str, Any] | None
    features: dict[str, str]


def _train(spec: Workflow, path: Path, folder: Path, say: Say, pieces: _Executor) -> _Trained:
    """Fit the model on the features (processed as the workflow says) and predict the test
    period, after the search if there is one."""
    from quarry.features import Pipeline
    from quarry.models import (
        Recipe,
        Segments,
        WalkForward,
        label_horizon,
        train,
        train_walk_forward,
    )

    frame = pl.read_parquet(path)
    m = spec.model
    if m.columns is not None:
        missing = [c for c in m.columns if c not in frame.columns]
        if missing:
            raise UsageError(
                f"model.columns: no feature {missing[0]!r} (features: "
                f"{', '.join(c for c in frame.columns if c not in ('instrument', 'date'))})"
            )
        frame = frame.select("instrument", "date", *m.columns, "LABEL0")
    processors = Pipeline.from_dict(spec.features.processors) if spec.features.processors else None
    if processors is not None:
        frame = processors.fit_transform(frame)  # fitted here: logged with the model
    exprs = _expressions(spec)
    recipe = Recipe({c: exprs[c] for c in frame.columns if c in exprs}, spec.label, processors)
    horizon = label_horizon(spec.label)
    schedule = None
    if spec.segments is not None:
        segments = Segments.parse(spec.segments)
    else:
        wf = spec.walk_forward
        assert wf is not None
        schedule = WalkForward(start=wf.start, end=wf.end, step=wf.step, horizon=horizon,
                               train_days=wf.train_days, valid_days=wf.valid_days)  # fmt: skip
        windows = schedule.windows(frame["date"].unique().sort().to_list())
        segments = windows[0].segments()  # the search's: before every test day
    params, found = dict(m.params), None
    if spec.search is not None:
        found = _search(spec, frame, segments, horizon, say, pieces)
        params = found["best_params"]
    common: dict[str, Any] = {"label": "LABEL0", "model": m.type, "params": params,
                              "seed": m.seed, "out": folder, "recipe": recipe,
                              "experiment": spec.tracking.experiment, "progress": say}  # fmt: skip
    if schedule is None:
        result = train(frame, segments, horizon=horizon, **common)
        return _Trained(result, segments, found, dict(recipe.features))
    result = train_walk_forward(frame, schedule, executor=pieces(), **common)
    return _Trained(result, windows[-1].segments(), found, dict(recipe.features))


def _tracking_key(spec: Workflow) -> dict[str, Any]:
    """The tracking section as the train key has it: the metadata's settings only when they
    are not their defaults, so that the keys of workflows that give none still hold."""
    defaults = TrackingSpec().model_dump(mode="json")
    section = spec.section("tracking")
    return {k: v for k, v in section.items()
            if k in ("experiment", "registered") or v != defaults[k]}  # fmt: skip


def _commits(store: Any, d: DataSpec) -> dict[str, dict[str, Any] | None]:
    """Per table the features read, its newest commit known at ``as_of`` (what
    ``quarry.features._cache.data_state`` keys the features by): version and commit time."""
    from quarry.data._store import to_utc

    when = to_utc(d.as_of)
    tables = ["bars", *(["universe"] if d.universe else []), "corporate_actions", "fundamentals"]
    out: dict[str, dict[str, Any] | None] = {}
    for table in tables:
        known = [c for c in store.commits(table) if when is None or c.knowledge_time <= when]
        last = max(known, key=lambda c: c.version, default=None)
        out[table] = None if last is None else {
            "version": last.version, "committed_at": last.committed_at.isoformat()
        }  # fmt: skip
    return out


def _metadata(
    spec: Workflow, store: Any, commits: dict[str, Any], trained: _Trained
) -> dict[str, Any]:
    """What the version is registered with, but what ``register`` fills in itself (name,
    version, run id, metrics). Authors default to the OS user, as an alias's mover does."""
    from quarry.data._store import to_utc
    from quarry.tracking import current_user

    t, d, source = spec.tracking, spec.data, spec.source
    assert source is not None  # checked before any step ran
    uri = store.location.uri
    first, last = trained.segments.train
    when = to_utc(d.as_of)
    return {
        "project": t.project,
        "description": t.description,
        "authors": list(t.authors) if t.authors else [current_user()],
        "licence": t.licence,
        "model_type": spec.model.type,
        "label": spec.label,
        "features": [{"name": n, "expression": e} for n, e in trained.features.items()],
        "training_window": {"start": first.isoformat(), "end": last.isoformat()},
        "data": {
            "store": uri if "://" in uri else os.path.abspath(uri),
            "as_of": when.isoformat() if when else None,
            "universe": d.universe,
            "commits": commits,
        },
        "workflow": {"path": source.path, "sha256": source.sha256},
    }


def _search(
    spec: Workflow,
    frame: pl.DataFrame,
    segments: Any,
    horizon: int,
    say: Say,
    pieces: _Executor,
) -> dict[str, Any]:
    """The workflow's search on the train and valid segments: the best parameters (the
    model's own ``params`` under the searched ones), the best validation figure, the trials."""
    from quarry.models import search

    s, m = spec.search, spec.model
    assert s is not None
    # jobs is explicit: the parameters found depend on the batch size, so the executor's
    # own count of workers must not decide it
    result = search(
        frame, segments, model=m.type, space=s.space, fixed=m.params, trials=s.trials,
        jobs=s.jobs, horizon=horizon, seed=m.seed, metric=s.metric, label="LABEL0",
        experiment=spec.tracking.experiment, progress=say, executor=pieces(),
    )  # fmt: skip
    return {
        "best_params": result.best_params,
        "best_value": result.best_value,
        "metric": s.metric,
        "trials": len(result.trials),
        "run_id": result.parent_run_id,
    }


def _log_backtest(run_id: str, metrics: dict[str, Any], folder: Path) -> None:
    """The backtest's figures, report and daily returns in the training's MLflow run."""
    import mlflow

    from quarry.tracking import client

    client()
    flat = {f"backtest_{k}": v for k, v in metrics.items() if isinstance(v, int | float)}
    flat |= {f"backtest_gross_{k}": v for k, v in metrics.get("gross", {}).items()}
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: float(v) for k, v in flat.items() if math.isfinite(float(v))})
        # the day-by-day returns too: the dashboard draws the equity curve from them
        for name in ("report.html", "metrics.json", "returns.parquet"):
            mlflow.log_artifact(str(folder / name), artifact_path="backtest")


def _results(
    spec: Workflow,
    trained: dict[str, Any],
    backtest: dict[str, Any],
    gate: dict[str, Any],
    steps: dict[str, str],
    executor: str,
) -> dict[str, Any]:
    test = trained["metrics"].get("test", {})
    bt = backtest["metrics"]
    out: dict[str, Any] = {"workflow": spec.name}
    out |= {k: test.get(k) for k in RESULT_KEYS}
    out |= {k: bt.get(k) for k in BACKTEST_KEYS}
    out["promoted"] = bool(gate.get("promoted"))
    out["mlflow_run_id"] = trained.get("run_id")
    out["model_version"] = trained.get("version")
    out["gate"] = gate
    out["steps"] = steps
    out["executor"] = executor  # where this run's pieces would run; no figure depends on it
    if "search" in trained:
        out["search"] = {k: v for k, v in trained["search"].items() if k != "run_id"}
    out["backtest_gross"] = bt.get("gross")
    # what the user should know: said once per run, cached steps included
    out["warnings"] = [*trained.get("warnings", []), *backtest.get("warnings", [])]
    out["notes"] = backtest.get("notes", [])
    return strict_json(out)  # type: ignore[no-any-return]


def _write(out: Path, results: dict[str, Any], backtest_dir: Path, train_dir: Path) -> None:
    """results.json, the backtest's report and files, and the predictions, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for source in backtest_dir.iterdir():
        if source.is_file() and source.name != "done.json":
            shutil.copy2(source, out / source.name)
    for name in ("predictions.parquet",):
        if (train_dir / name).exists():
            shutil.copy2(train_dir / name, out / name)
    if (train_dir / "metrics.json").exists():
        shutil.copy2(train_dir / "metrics.json", out / "train_metrics.json")
    (out / "results.json").write_text(dumps(results))
