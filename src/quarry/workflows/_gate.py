"""The evaluate-then-promote gate: a new model takes the registry's alias (``champion``) only
if it beats the current champion on the same, most recent test window.

Both models are measured alike on that window, each as it was registered: the champion is
loaded from the registry with its own recipe (feature expressions and fitted processors),
its features are computed from the store for the window (through the feature cache), and
its own processors are applied; the challenger's scores are those its training wrote. Each
side's scores get the same signal analysis (IC, Rank IC and their IRs against the
workflow's label) and the same backtest (Sharpe, information ratio, excess return, net of
costs). Every rule must hold: the challenger's figure above the champion's plus the rule's
margin (a figure that cannot be computed, such as the IC of constant scores, loses to any
that can). A challenger whose backtest on the window never traded is not promoted. The
first model ever registered becomes the champion. The alias is moved by compare-and-set
against the champion that was evaluated, so two runs finishing together cannot both move
it. The decision and both sets of figures go to the challenger's MLflow run (tags, metrics
and gate.json) and to results.json.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from quarry._json import dumps
from quarry.exceptions import QuarryError

if TYPE_CHECKING:
    from quarry.workflows._spec import Workflow

__all__ = ["decide", "evaluate"]

KEYS = ["instrument", "date"]


def evaluate(spec: Workflow, store: Any, scored: pl.DataFrame) -> dict[str, float]:
    """Signal and backtest figures of ``scored`` (instrument, date, score, LABEL0), with the
    backtest's count of filled orders (``orders_filled``)."""
    from quarry.signals import analyze
    from quarry.workflows._backtest import backtest

    signal = analyze(scored, score="score", label="LABEL0").as_dict()
    result = backtest(spec, store, scored.select("instrument", "date", "score"), None)
    figures = {k: signal[k] for k in ("ic", "icir", "rank_ic", "rank_icir")}
    for k in ("sharpe", "information_ratio", "excess_annualized_return", "annualized_return"):
        figures[k] = result.metrics[k]
    figures["orders_filled"] = result.metrics["orders_filled"]
    return {k: float(v) if v is not None else math.nan for k, v in figures.items()}


def _window(frame: pl.DataFrame, window: list[str]) -> pl.DataFrame:
    first, last = date.fromisoformat(window[0]), date.fromisoformat(window[1])
    return frame.filter(pl.col("date").is_between(first, last))


def _champion_scores(
    spec: Workflow, store: Any, name: str, version: int, window: list[str], labels: pl.DataFrame
) -> pl.DataFrame | str:
    """The champion's scores on the window, from its own features and processors, with the
    workflow's label; or why it cannot score them."""
    from quarry.features import FeatureCache
    from quarry.models._inputs import features_for
    from quarry.tracking import load_packaged

    d = spec.data
    try:
        packaged = load_packaged(name, version)
        if not packaged.inputs():
            return f"the champion (version {version}) does not record the features it reads"
        features = features_for(
            packaged, store, universe=d.universe, as_of=d.as_of,
            start=date.fromisoformat(window[0]), end=date.fromisoformat(window[1]),
            memory=spec.features.memory, cache=FeatureCache(),
        )  # fmt: skip
        scores = packaged.score(features)
    except QuarryError as exc:
        return f"the champion (version {version}) cannot score the window: {exc}"
    scored = features.select(*KEYS).with_columns(score=pl.Series(scores, dtype=pl.Float64))
    return scored.join(labels, on=KEYS, how="left")


def decide(
    spec: Workflow,
    store: Any,
    features_path: Path,
    trained: dict[str, Any],
    champion: int | None,
    predictions_path: Path,
) -> dict[str, Any]:
    """Compare the trained model with the champion and move the alias when it wins."""
    from quarry.tracking import move_alias

    name, alias, version = spec.tracking.registered, spec.gate.alias, trained["version"]
    assert name is not None
    window = trained["window"]
    base: dict[str, Any] = {"model": name, "alias": alias, "challenger_version": version,
                            "champion_version": champion, "window": window}  # fmt: skip
    if champion == version:
        return base | {"promoted": True, "reason": f"already the {alias}"}

    def finish(decision: dict[str, Any]) -> dict[str, Any]:
        if decision["promoted"]:
            now = move_alias(name, alias, version, expected=champion,
                             by=f"gate (run {trained.get('run_id')})",
                             reason=decision["reason"], run_id=trained.get("run_id"))  # fmt: skip
            if now is not None:
                held = "was removed" if now < 0 else f"moved to version {now}"
                decision |= {"promoted": False, "reason": f"the {alias} {held} while this "
                             "model was evaluated: run the workflow again to be compared "
                             "with it"}  # fmt: skip
        _record(trained.get("run_id"), decision)
        return decision

    labels = _window(pl.read_parquet(features_path, columns=[*KEYS, "LABEL0"]), window)
    mine = _window(pl.read_parquet(predictions_path), window).join(labels, on=KEYS, how="left")
    challenger = evaluate(spec, store, mine)
    base["challenger"] = challenger
    if challenger["orders_filled"] == 0:
        return finish(base | {"promoted": False, "champion": None, "rules": [], "reason":
                              f"its backtest on the window {window[0]}:{window[1]} never "
                              "traded (every order blocked, or no score matched the "
                              "market): nothing to promote"})  # fmt: skip
    if champion is None:
        return finish(base | {"promoted": True, "reason": "the first registered model: it "
                              f"becomes the {alias}"})  # fmt: skip
    theirs = _champion_scores(spec, store, name, champion, window, labels)
    if isinstance(theirs, str):
        return finish(base | {"promoted": False, "reason": theirs, "champion": None,
                              "rules": []})  # fmt: skip
    held = evaluate(spec, store, theirs)
    rules: list[dict[str, Any]] = []
    for rule in spec.gate.rules:
        a, b = challenger[rule.metric], held[rule.metric]
        # an undefined figure (constant scores have no IC) never wins and always loses
        passed = math.isfinite(a) and (not math.isfinite(b) or a > b + rule.margin)
        rules.append({"metric": rule.metric, "margin": rule.margin, "challenger": a,
                      "champion": b, "passed": passed})  # fmt: skip
    failed = [str(r["metric"]) for r in rules if not r["passed"]]
    reason = (
        f"did not beat the {alias} (version {champion}) on {', '.join(failed)}"
        if failed
        else f"beat the {alias} (version {champion}) on every rule"
    )
    return finish(base | {"promoted": not failed, "reason": reason, "champion": held,
                          "rules": rules})  # fmt: skip


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
        mlflow.log_text(dumps(decision), "gate.json")
