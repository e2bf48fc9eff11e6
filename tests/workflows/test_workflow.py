"""Workflows end to end on a small market: the file's checks, the step cache, the gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from quarry.data import Store, generate, ingest_frame, read_bars, table_spec
from quarry.exceptions import UsageError
from quarry.tracking import alias_version
from quarry.workflows import StepCache, load_workflow, run_workflow
from tests.cli.helpers import run

NOISE = "$volume / Mean($volume, 5)"
REVERSAL = "-($close / Ref($close, 5) - 1)"  # the planted alpha
MOMENTUM = "$close / Ref($close, 20) - 1"  # weakly related to it


def _spec(store: Path, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "small",
        "data": {"store": str(store)},
        "features": {"set": "none", "extra": {"NOISE": NOISE, "REV5": REVERSAL, "MOM20": MOMENTUM}},
        "model": {"type": "lightgbm", "params": {"num_boost_round": 30}, "seed": 0},
        "segments": {
            "train": "2015-01-02:2015-08-31",
            "valid": "2015-09-08:2015-10-30",
            "test": "2015-11-06:2016-02-26",
        },
        "backtest": {"topk": 8, "n_drop": 2},
        "tracking": {"experiment": "small", "register": "small"},
    }
    for key, value in changes.items():
        spec[key] = value if not isinstance(value, dict) else {**spec.get(key, {}), **value}
    return spec


def _write(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def market(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "home"))
    store = tmp_path / "store"
    generate(Store(store), 60, 300, seed=5, alpha_ic=0.15)
    return store


def test_an_unknown_key_names_itself_and_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "w.yaml", _spec(tmp_path, model={"paramz": {}}))
    with pytest.raises(UsageError, match=r"w\.yaml: unknown key 'paramz' in model .*'params'"):
        load_workflow(path)
    path = _write(tmp_path / "w2.yaml", {**_spec(tmp_path), "walk_forward": {"start": "2015-01-01",
                                                                          "end": "2015-02-01",
                                                                          "step": 5}})  # fmt: skip
    with pytest.raises(UsageError, match="either segments"):
        load_workflow(path)
    code, _, err = run("run", str(tmp_path / "w.yaml"), "--out", str(tmp_path / "o"))
    assert code == 1 and "paramz" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_cache_reruns_exactly_what_changed(market: Path, tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "steps")
    spec = load_workflow(_write(tmp_path / "a.yaml", _spec(market)))
    first = run_workflow(spec, tmp_path / "out1", cache=cache)
    assert first.steps == {"features": "ran", "train": "ran", "backtest": "ran", "gate": "ran"}
    again = run_workflow(spec, tmp_path / "out2", cache=cache)
    # unchanged: every step is reused (the gate runs again only because the champion it
    # was decided against has changed: the first run made itself the champion)
    assert {k: again.steps[k] for k in ("features", "train", "backtest")} == {
        "features": "cached", "train": "cached", "backtest": "cached"}  # fmt: skip
    third = run_workflow(spec, tmp_path / "out3", cache=cache)
    assert set(third.steps.values()) == {"cached"}
    assert third.results == {**first.results, "steps": third.steps, "gate": third.results["gate"]}
    # a model parameter: train and what follows
    changed = load_workflow(_write(tmp_path / "b.yaml", _spec(
        market, model={"params": {"num_boost_round": 30, "num_leaves": 8}})))  # fmt: skip
    second = run_workflow(changed, tmp_path / "out4", cache=cache)
    assert second.steps["features"] == "cached"
    assert second.steps["train"] == second.steps["backtest"] == "ran"
    # a vendor correction of one bar: the features and everything after them
    store = Store(market)
    bar = read_bars(store, ["open", "high", "low", "close", "volume"]).row(5000, named=True)
    fixed = pl.DataFrame([{**bar, "close": bar["close"] * 1.01,
                           "high": max(bar["high"], bar["close"] * 1.01)}])  # fmt: skip
    ingest_frame(store, table_spec("bars"), fixed)
    corrected = run_workflow(spec, tmp_path / "out5", cache=cache)
    assert corrected.steps["features"] == corrected.steps["train"] == "ran"
    assert corrected.steps["backtest"] == "ran"


@pytest.mark.slow
def test_the_same_workflow_gives_identical_metrics(market: Path, tmp_path: Path) -> None:
    spec = load_workflow(_write(tmp_path / "a.yaml", _spec(market, tracking={"register": None})))
    one = run_workflow(spec, tmp_path / "o1", cache=StepCache(tmp_path / "s1"))
    two = run_workflow(spec, tmp_path / "o2", cache=StepCache(tmp_path / "s2"))
    assert one.steps == two.steps == {"features": "ran", "train": "ran", "backtest": "ran"}
    drop = ("mlflow_run_id", "steps")
    assert {k: v for k, v in one.results.items() if k not in drop} == {
        k: v for k, v in two.results.items() if k not in drop}  # fmt: skip
    saved = json.loads((tmp_path / "o1" / "results.json").read_text())
    for key in ("ic", "icir", "rank_ic", "rank_icir", "annualized_return",
                "excess_annualized_return", "information_ratio", "max_drawdown", "promoted",
                "mlflow_run_id"):  # fmt: skip
        assert key in saved
    assert (tmp_path / "o1" / "report.html").exists()


@pytest.mark.slow
def test_the_gate_with_fitted_processors(market: Path, tmp_path: Path) -> None:
    """Processors fitted on the training period transform both models' features alike."""
    steps = [{"name": "RobustZScoreNorm", "fit_start": "2015-01-02", "fit_end": "2015-08-31"}]
    cache = StepCache(tmp_path / "steps")
    for name, columns in (("w", ["MOM20"]), ("s", ["MOM20", "REV5"])):
        spec = _spec(market, model={"columns": columns},
                     features={"processors": steps})  # fmt: skip
        result = run_workflow(load_workflow(_write(tmp_path / f"{name}.yaml", spec)),
                              tmp_path / name, cache=cache)  # fmt: skip
    assert result.results["gate"]["champion"]["rank_ic"] is not None
    assert result.results["promoted"]


@pytest.mark.slow
def test_the_gate_promotes_only_a_better_model(market: Path, tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "steps")
    weak = _spec(market, model={"columns": ["MOM20"]})
    strong = _spec(market, model={"columns": ["MOM20", "REV5"]})
    first = run_workflow(load_workflow(_write(tmp_path / "w.yaml", weak)), tmp_path / "o1",
                         cache=cache)  # fmt: skip
    assert first.results["promoted"] and "first registered" in first.results["gate"]["reason"]
    assert alias_version("small", "champion") == first.results["model_version"] == 1
    better = run_workflow(load_workflow(_write(tmp_path / "s.yaml", strong)), tmp_path / "o2",
                          cache=cache)  # fmt: skip
    gate = better.results["gate"]
    assert better.results["promoted"], (gate["reason"], gate.get("rules"))
    assert gate["champion"]["rank_ic"] is not None  # a real comparison: both measured
    assert gate["challenger"]["rank_ic"] > gate["champion"]["rank_ic"]
    assert gate["challenger"]["sharpe"] > gate["champion"]["sharpe"]
    assert alias_version("small", "champion") == better.results["model_version"] == 2
    worse_spec = _spec(market, model={"columns": ["MOM20", "NOISE"], "seed": 3})
    worse = run_workflow(load_workflow(_write(tmp_path / "w2.yaml", worse_spec)),
                         tmp_path / "o3", cache=cache)  # fmt: skip
    gate = worse.results["gate"]
    assert not worse.results["promoted"] and "did not beat" in gate["reason"]
    assert gate["challenger"]["rank_ic"] < gate["champion"]["rank_ic"]
    assert gate["champion_version"] == 2 and gate["window"] == better.results["gate"]["window"]
    assert alias_version("small", "champion") == 2  # the alias stayed
    # the alias moved back by hand: the cached promotion is not trusted, it is decided again
    from quarry.tracking import set_alias

    set_alias("small", "champion", 1)
    again = run_workflow(load_workflow(tmp_path / "s.yaml"), tmp_path / "o4", cache=cache)
    assert again.steps["gate"] == "ran" and again.results["promoted"]
    assert alias_version("small", "champion") == 2
    saved = json.loads((tmp_path / "o3" / "results.json").read_text())
    assert saved["promoted"] is False and saved["gate"]["rules"][0]["metric"] == "rank_ic"
