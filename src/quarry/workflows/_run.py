"""Running a workflow: features -> train and predict -> signal analysis -> backtest -> report
-> tracking -> the promotion gate, each step reused from the step cache when its inputs have
not changed.

Keys (see ``_cache``):
- features: the store's state for the read (bars, corporate actions, fundamentals, universe
  commits known at ``as_of``), the expressions, the label and the dates;
- train: the features key, the processors, the model, the schedule and the experiment;
- backtest: the train key and the backtest's settings (the market is the features' store
  state);
- gate: the train and backtest keys, the rules, and the champion's version when it runs.

A cached train step keeps its MLflow run and its registered version, so a rerun neither
logs a second run nor registers the model twice.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from quarry._json import dumps, strict_json
from quarry.exceptions import UsageError
from quarry.workflows._backtest import backtest
from quarry.workflows._cache import StepCache, digest
from quarry.workflows._spec import Workflow

__all__ = ["EXECUTORS", "RunResult", "run_workflow"]

EXECUTORS = ("local",)
RESULT_KEYS = ("ic", "icir", "rank_ic", "rank_icir")
BACKTEST_KEYS = ("annualized_return", "excess_annualized_return", "information_ratio",
                 "max_drawdown", "sharpe", "turnover", "orders_filled",
                 "days_without_position")  # fmt: skip

Say = Callable[[str], None]


@dataclass
class RunResult:
    results: dict[str, Any]
    steps: dict[str, str] = field(default_factory=dict)  # step -> "ran" or "cached"


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


def run_workflow(
    spec: Workflow,
    out: Path,
    *,
    force: bool = False,
    executor: str = "local",
    cache: StepCache | None = None,
    say: Say | None = None,
    progress: Say | None = None,
) -> RunResult:
    """Run ``spec`` and write ``out``/results.json and report.html (with its PNGs).

    ``say`` hears each step as it starts, how long it ran (``features: ran in 12.3 s``) or
    that it was found in the cache (``train: cached``); ``progress`` the steps' finer
    messages (boosting rounds with the best validation loss so far, penalties, windows)."""
    if executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: choose one of {', '.join(EXECUTORS)}")
    from quarry.data._store import to_utc
    from quarry.features._cache import _commit_state, data_state

    cache = cache or StepCache()
    say = say or (lambda message: None)
    detail = progress or (lambda message: None)
    store = _store(spec)
    store.require()
    d = spec.data
    state = data_state(store, as_of=d.as_of, universe=d.universe, start=d.start, end=d.end)
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
    features_key = digest({"rows": state.rows_key, "values": state.value_tables,
                           "exprs": exprs, "label": spec.label})  # fmt: skip

    def features(folder: Path, record: dict[str, Any]) -> None:
        from quarry.features import FeatureCache, materialize

        done = materialize(
            store, exprs, folder / "features.parquet", label=spec.label, universe=d.universe,
            as_of=d.as_of, start=d.start, end=d.end, memory=spec.features.memory,
            cache=FeatureCache(),
            progress=lambda what, n, total: detail(f"features: {what} {n}/{total}"),
        )  # fmt: skip
        record["rows"] = done.rows

    features_dir = step("features", features_key, features)
    from quarry.tracking import tracking_uri

    # The tracking store is part of the key: a cached run id and version belong to it.
    train_key = digest({"features": features_key, "processors": spec.features.processors,
                        "model": spec.section("model"), "segments": spec.segments,
                        "walk_forward": spec.section("walk_forward"),
                        "tracking": spec.section("tracking"), "uri": tracking_uri()})  # fmt: skip

    def train_step(folder: Path, record: dict[str, Any]) -> None:
        result, window = _train(spec, features_dir / "features.parquet", folder, detail)
        record["run_id"] = result.run_id
        record["metrics"] = result.metrics
        record["warnings"] = list(result.warnings)
        record["window"] = [str(window[0]), str(window[1])]
        if spec.tracking.registered and result.run_id:
            from quarry.tracking import register

            record["version"] = register(result.run_id, spec.tracking.registered)

    train_dir = step("train", train_key, train_step)
    trained = records["train"]
    # The industries (instruments table) decide the optimizer's limits and the exposure.
    industries = _commit_state(store, "instruments", to_utc(d.as_of))
    backtest_key = digest({"train": train_key, "backtest": spec.section("backtest"),
                           "market": state.rows_key, "values": state.value_tables,
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
    results = _results(spec, trained, records["backtest"], gate, run.steps)
    _write(out, results, backtest_dir, train_dir)
    run.results = results
    return run


def _train(spec: Workflow, path: Path, folder: Path, say: Say) -> tuple[Any, tuple[date, date]]:
    """Fit the model on the features (processed as the workflow says) and predict the test
    period; returns the result and the most recent test window."""
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
    common: dict[str, Any] = {"label": "LABEL0", "model": m.type, "params": m.params,
                              "seed": m.seed, "out": folder, "recipe": recipe,
                              "experiment": spec.tracking.experiment, "progress": say}  # fmt: skip
    if spec.segments is not None:
        segments = Segments.parse(spec.segments)
        result = train(frame, segments, horizon=horizon, **common)
        return result, segments.test
    wf = spec.walk_forward
    assert wf is not None
    schedule = WalkForward(start=wf.start, end=wf.end, step=wf.step, horizon=horizon,
                           train_days=wf.train_days, valid_days=wf.valid_days)  # fmt: skip
    result = train_walk_forward(frame, schedule, **common)
    windows = schedule.windows(frame["date"].unique().sort().to_list())
    return result, windows[-1].test


def _log_backtest(run_id: str, metrics: dict[str, Any], folder: Path) -> None:
    """The backtest's figures and report in the training's MLflow run."""
    import mlflow

    from quarry.tracking import client

    client()
    flat = {f"backtest_{k}": v for k, v in metrics.items() if isinstance(v, int | float)}
    flat |= {f"backtest_gross_{k}": v for k, v in metrics.get("gross", {}).items()}
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics({k: float(v) for k, v in flat.items() if math.isfinite(float(v))})
        mlflow.log_artifact(str(folder / "report.html"), artifact_path="backtest")
        mlflow.log_artifact(str(folder / "metrics.json"), artifact_path="backtest")


def _results(
    spec: Workflow,
    trained: dict[str, Any],
    backtest: dict[str, Any],
    gate: dict[str, Any],
    steps: dict[str, str],
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
