"""The evaluate-then-promote gate: a new model takes the registry's alias (``champion``) only
if it beats the current champion on the same, most recent test window.

Both models are measured alike on that window: the champion (loaded from the registry)
scores the workflow's features for the window, with the same processors, and each side's
scores get the same signal analysis (IC, Rank IC and their IRs against the label) and the
same backtest (Sharpe, information ratio, excess return, net of costs). Every rule must
hold: the challenger's figure above the champion's plus the rule's margin (a figure that
cannot be computed, such as the IC of constant scores, loses to any that can). The first
model ever registered becomes the champion. The decision and both sets of figures go to the
challenger's MLflow run (tags, metrics and gate.json) and to results.json.
"""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

if TYPE_CHECKING:
    from quarry.workflows._spec import Workflow

__all__ = ["decide", "evaluate"]


def evaluate(spec: Workflow, store: Any, scored: pl.DataFrame) -> dict[str, float]:
    """Signal and backtest figures of ``scored`` (instrument, date, score, LABEL0)."""
    from quarry.models._signal import analyze
    from quarry.workflows._run import _backtest

    signal = analyze(scored, score="score", label="LABEL0").as_dict()
    result = _backtest(spec, store, scored.select("instrument", "date", "score"), None)
    figures = {k: signal[k] for k in ("ic", "icir", "rank_ic", "rank_icir")}
    for k in ("sharpe", "information_ratio", "excess_annualized_return", "annualized_return"):
        figures[k] = result.metrics[k]
    return {k: float(v) if v is not None else math.nan for k, v in figures.items()}


def _window(frame: pl.DataFrame, window: list[str]) -> pl.DataFrame:
    first, last = date.fromisoformat(window[0]), date.fromisoformat(window[1])
    return frame.filter(pl.col("date").is_between(first, last))


def _champion_scores(
    spec: Workflow, name: str, version: int, features: pl.DataFrame
) -> pl.DataFrame | str:
    """The champion's scores on ``features``, or why it cannot score them."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from quarry.tracking import client

    client()
    try:
        model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    except (MlflowException, OSError) as exc:  # artifacts moved or deleted
        return f"the champion (version {version}) cannot be loaded: {str(exc).splitlines()[0]}"
    schema = model.metadata.get_input_schema()
    columns = schema.input_names() if schema is not None else []
    missing = [c for c in columns if c not in features.columns]
    if not columns or missing:
        return (
            f"the champion (version {version}) reads columns the workflow's features do not "
            f"have ({', '.join(missing[:5]) or 'no signature'})"
        )
    matrix = features.select(columns).to_pandas()
    # the types the champion was logged with (processors may have widened float32 features)
    matrix = matrix.astype(dict(zip(columns, schema.numpy_types(), strict=True)))
    scores = np.asarray(model.predict(matrix), dtype=np.float64).reshape(-1)
    return features.select("instrument", "date", "LABEL0").with_columns(score=scores)


def decide(
    spec: Workflow,
    store: Any,
    features_path: Path,
    trained: dict[str, Any],
    champion: int | None,
    predictions_path: Path,
) -> dict[str, Any]:
    """Compare the trained model with the champion and move the alias when it wins."""
    from quarry.features import Pipeline
    from quarry.tracking import set_alias

    name, alias, version = spec.tracking.registered, spec.gate.alias, trained["version"]
    assert name is not None
    window = trained["window"]
    base: dict[str, Any] = {"model": name, "alias": alias, "challenger_version": version,
                            "champion_version": champion, "window": window}  # fmt: skip
    if champion is None:
        set_alias(name, alias, version)
        decision = base | {"promoted": True, "reason": "the first registered model: it becomes "
                           f"the {alias}"}  # fmt: skip
        _record(trained.get("run_id"), decision)
        return decision
    if champion == version:
        return base | {"promoted": True, "reason": f"already the {alias}"}
    # The processors as training applied them (fitted on the whole frame, fit windows
    # included), then the window: both models see the same transformed features.
    features = pl.read_parquet(features_path)
    if spec.features.processors:
        features = Pipeline.from_dict(spec.features.processors).fit_transform(features)
    features = _window(features, window)
    labels = features.select("instrument", "date", "LABEL0")
    mine = _window(pl.read_parquet(predictions_path), window).join(
        labels, on=["instrument", "date"], how="left"
    )
    theirs = _champion_scores(spec, name, champion, features)
    challenger = evaluate(spec, store, mine)
    if isinstance(theirs, str):
        decision = base | {"promoted": False, "reason": theirs, "challenger": challenger,
                           "champion": None, "rules": []}  # fmt: skip
        _record(trained.get("run_id"), decision)
        return decision
    held = evaluate(spec, store, theirs)
    rules: list[dict[str, Any]] = []
    for rule in spec.gate.rules:
        a, b = challenger[rule.metric], held[rule.metric]
        # an undefined figure (constant scores have no IC) never wins and always loses
        passed = math.isfinite(a) and (not math.isfinite(b) or a > b + rule.margin)
        rules.append({"metric": rule.metric, "margin": rule.margin, "challenger": a,
                      "champion": b, "passed": passed})  # fmt: skip
    promoted = all(r["passed"] for r in rules)
    failed = [str(r["metric"]) for r in rules if not r["passed"]]
    reason = (
        f"beat the {alias} (version {champion}) on every rule"
        if promoted
        else f"did not beat the {alias} (version {champion}) on {', '.join(failed)}"
    )
    if promoted:
        set_alias(name, alias, version)
    decision = base | {"promoted": promoted, "reason": reason, "challenger": challenger,
                       "champion": held, "rules": rules}  # fmt: skip
    _record(trained.get("run_id"), decision)
    return decision


def _record(run_id: str | None, decision: dict[str, Any]) -> None:
    """The decision in the challenger's MLflow run."""
    if not run_id:
        return
    import mlflow

    from quarry.tracking import client

    client()
    with mlflow.start_run(run_id=run_id):
        mlflow.set_tags({"quarry.gate.promoted": str(decision["promoted"]).lower(),
                         "quarry.gate.reason": decision["reason"][:500]})  # fmt: skip
        for side in ("challenger", "champion"):
            figures = decision.get(side) or {}
            mlflow.log_metrics({f"gate_{side}_{k}": v for k, v in figures.items()
                                if math.isfinite(v)})  # fmt: skip
        mlflow.log_text(json.dumps(decision, indent=2, default=str), "gate.json")
