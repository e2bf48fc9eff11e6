"""The promotion gate: every pair of model types, each side scored with its own recipe, the
alias moved by compare-and-set, and no promotion of a model that never traded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quarry.tracking import alias_history, alias_version, set_alias
from quarry.workflows import StepCache, load_workflow, run_workflow
from tests.workflows.helpers import MOMENTUM, REVERSAL, small_spec, write_spec

PARAMS: dict[str, dict[str, Any]] = {
    "lightgbm": {"num_boost_round": 30},
    "linear": {},
    "mlp": {"hidden": [16], "max_epochs": 3, "batch_size": 1024},
}
# fitted on the training period: a champion scored without them would score differently
PROCESSORS = [
    {"name": "RobustZScoreNorm", "fit_start": "2015-01-02", "fit_end": "2015-08-31"},
    {"name": "Fillna"},
]
# the challengers read features the champion does not, and no NOISE, which it does
OTHER_FEATURES = {"REV5": REVERSAL, "MOM20": MOMENTUM, "VOL5": "Std($close/Ref($close,1)-1, 5)"}


def _run(tmp_path: Path, market: Path, name: str, cache: StepCache, **changes: Any) -> Any:
    spec = load_workflow(write_spec(tmp_path / f"{name}.yaml", small_spec(market, **changes)))
    return run_workflow(spec, tmp_path / name, cache=cache)


def _rank_ic(scores: pl.DataFrame, labels: pl.DataFrame) -> float:
    """Mean over days of the Spearman correlation of score and label, in plain pandas."""
    both = scores.join(labels, on=["instrument", "date"]).to_pandas().dropna()
    daily = both.groupby("date").apply(
        lambda day: day["score"].rank().corr(day["LABEL0"].rank()), include_groups=False
    )
    return float(pd.Series(daily).mean())


def _labels(cache: StepCache) -> pl.DataFrame:
    (path,) = (cache.root / "features").glob("*/features.parquet")
    return pl.read_parquet(path, columns=["instrument", "date", "LABEL0"])


@pytest.mark.slow
@pytest.mark.parametrize("champion", ["lightgbm", "linear", "mlp"])
def test_every_champion_is_scored_with_its_own_features_and_processors(
    champion: str, market: Path, tmp_path: Path
) -> None:
    cache = StepCache(tmp_path / "steps")
    first = _run(tmp_path, market, "champion", cache,
                 model={"type": champion, "params": PARAMS[champion]},
                 features={"processors": PROCESSORS})  # fmt: skip
    assert first.results["promoted"]
    # what the champion scored on the test window when it was trained: the gate, loading
    # it from the registry and computing its features from the store, must agree
    own = pl.read_parquet(tmp_path / "champion" / "predictions.parquet")
    expected = _rank_ic(own, _labels(cache))
    for challenger in ("lightgbm", "linear", "mlp"):
        result = _run(tmp_path, market, f"vs-{challenger}", StepCache(tmp_path / challenger),
                      model={"type": challenger, "params": PARAMS[challenger]},
                      features={"extra": OTHER_FEATURES},
                      gate={"rules": [{"metric": "rank_ic", "margin": 10.0}]})  # fmt: skip
        gate = result.results["gate"]
        assert gate["champion_version"] == 1, gate
        assert gate["champion"] is not None, gate["reason"]
        assert gate["champion"]["rank_ic"] == pytest.approx(expected, abs=1e-9)
        assert not result.results["promoted"] and "did not beat" in gate["reason"]
        assert np.isfinite(gate["challenger"]["rank_ic"])
    assert alias_version("small", "champion") == 1


@pytest.mark.slow
def test_the_gate_promotes_only_a_better_model(market: Path, tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "steps")
    first = _run(tmp_path, market, "o1", cache, model={"columns": ["MOM20"]})
    assert first.results["promoted"] and "first registered" in first.results["gate"]["reason"]
    assert alias_version("small", "champion") == first.results["model_version"] == 1
    (event,) = alias_history("small")  # the gate's move is on the record
    assert (event.alias, event.from_version, event.to_version) == ("champion", None, 1)
    assert event.by == f"gate (run {first.results['mlflow_run_id']})"
    better = _run(tmp_path, market, "o2", cache, model={"columns": ["MOM20", "REV5"]})
    gate = better.results["gate"]
    assert better.results["promoted"], (gate["reason"], gate.get("rules"))
    assert gate["champion"]["rank_ic"] is not None  # a real comparison: both measured
    assert gate["challenger"]["rank_ic"] > gate["champion"]["rank_ic"]
    assert gate["challenger"]["sharpe"] > gate["champion"]["sharpe"]
    assert alias_version("small", "champion") == better.results["model_version"] == 2
    worse = _run(tmp_path, market, "o3", cache, model={"columns": ["MOM20", "NOISE"], "seed": 3})
    gate = worse.results["gate"]
    assert not worse.results["promoted"] and "did not beat" in gate["reason"]
    assert gate["challenger"]["rank_ic"] < gate["champion"]["rank_ic"]
    assert gate["champion_version"] == 2 and gate["window"] == better.results["gate"]["window"]
    assert alias_version("small", "champion") == 2  # the alias stayed
    # the alias moved back by hand: the cached promotion is not trusted, it is decided again
    set_alias("small", "champion", 1)
    again = run_workflow(load_workflow(tmp_path / "o2.yaml"), tmp_path / "o4", cache=cache)
    assert again.steps["gate"] == "ran" and again.results["promoted"]
    assert alias_version("small", "champion") == 2
    saved = json.loads((tmp_path / "o3" / "results.json").read_text())
    assert saved["promoted"] is False and saved["gate"]["rules"][0]["metric"] == "rank_ic"


@pytest.mark.slow
def test_an_alias_moved_during_the_evaluation_is_not_overwritten(
    market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs finishing together: the one that moves the alias second finds it no longer
    at the champion it was compared with, and leaves it."""
    from quarry.workflows import _gate

    cache = StepCache(tmp_path / "steps")
    _run(tmp_path, market, "weak", cache, model={"columns": ["MOM20"]})
    _run(tmp_path, market, "other", cache, model={"columns": ["MOM20", "NOISE"], "seed": 1},
         gate={"rules": [{"metric": "rank_ic", "margin": 10.0}]})  # fmt: skip
    assert alias_version("small", "champion") == 1
    real = _gate._champion_scores

    def meanwhile(*args: Any, **kwargs: Any) -> Any:
        set_alias("small", "champion", 2)  # another run promotes version 2 meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(_gate, "_champion_scores", meanwhile)
    strong = _run(tmp_path, market, "strong", cache, model={"columns": ["MOM20", "REV5"]})
    gate = strong.results["gate"]
    assert gate["rules"] and all(r["passed"] for r in gate["rules"])  # it did beat version 1
    assert not strong.results["promoted"]
    assert "moved to version 2 while this model was evaluated" in gate["reason"]
    assert alias_version("small", "champion") == 2


@pytest.mark.slow
def test_a_model_that_never_traded_is_not_promoted(market: Path, tmp_path: Path) -> None:
    # lots of a billion shares: no order can be paid for, so nothing is ever bought
    result = _run(tmp_path, market, "o", StepCache(tmp_path / "steps"),
                  backtest={"lot_size": 1_000_000_000})  # fmt: skip
    gate = result.results["gate"]
    assert not result.results["promoted"]
    assert "never traded" in gate["reason"] and gate["challenger"]["orders_filled"] == 0
    assert alias_version("small", "champion") is None
