"""Workflows end to end on a small market: the file's checks, the step cache, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from quarry.data import Store, ingest_frame, read_bars, table_spec
from quarry.exceptions import UsageError
from quarry.workflows import StepCache, load_workflow, run_workflow
from tests.cli.helpers import run
from tests.workflows.helpers import small_spec, write_spec


def test_an_unknown_key_names_itself_and_the_file(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "w.yaml", small_spec(tmp_path, model={"paramz": {}}))
    with pytest.raises(UsageError, match=r"w\.yaml: unknown key 'paramz' in model .*'params'"):
        load_workflow(path)
    walk = {"start": "2015-01-01", "end": "2015-02-01", "step": 5}
    path = write_spec(tmp_path / "w2.yaml", {**small_spec(tmp_path), "walk_forward": walk})
    with pytest.raises(UsageError, match="either segments"):
        load_workflow(path)
    code, _, err = run("run", str(tmp_path / "w.yaml"), "--out", str(tmp_path / "o"))
    assert code == 1 and "paramz" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_cache_reruns_exactly_what_changed(market: Path, tmp_path: Path) -> None:
    cache = StepCache(tmp_path / "steps")
    spec = load_workflow(write_spec(tmp_path / "a.yaml", small_spec(market)))
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
    changed = load_workflow(write_spec(tmp_path / "b.yaml", small_spec(
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
def test_a_metric_sync_that_failed_is_made_by_the_next_cached_run(
    market: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import quarry.tracking

    cache = StepCache(tmp_path / "steps")
    spec = load_workflow(write_spec(tmp_path / "a.yaml", small_spec(market)))
    run_workflow(spec, tmp_path / "out1", cache=cache)
    run_workflow(spec, tmp_path / "out2", cache=cache)  # the gate against the new champion
    synced: list[int] = []
    real = quarry.tracking.sync_metrics

    def failing(name: str, version: int) -> bool:
        raise OSError("database is locked")

    def counting(name: str, version: int) -> bool:
        synced.append(version)
        return real(name, version)

    # every step cached, and the figures synced already: no sync
    monkeypatch.setattr(quarry.tracking, "sync_metrics", counting)
    assert set(run_workflow(spec, tmp_path / "out3", cache=cache).steps.values()) == {"cached"}
    assert synced == []
    # a sync that fails after the steps were saved is made again by the next (cached) run
    for marker in (cache.root / "synced").iterdir():
        marker.unlink()
    monkeypatch.setattr(quarry.tracking, "sync_metrics", failing)
    with pytest.raises(OSError, match="locked"):
        run_workflow(spec, tmp_path / "out4", cache=cache)
    assert not list((cache.root / "synced").iterdir())
    monkeypatch.setattr(quarry.tracking, "sync_metrics", counting)
    assert set(run_workflow(spec, tmp_path / "out5", cache=cache).steps.values()) == {"cached"}
    assert synced == [1]
    run_workflow(spec, tmp_path / "out6", cache=cache)
    assert synced == [1]


@pytest.mark.slow
def test_the_same_workflow_gives_identical_metrics(market: Path, tmp_path: Path) -> None:
    unregistered = small_spec(market, tracking={"register": None})
    spec = load_workflow(write_spec(tmp_path / "a.yaml", unregistered))
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
def test_the_callbacks_hear_each_step_its_time_and_the_boosting_rounds(
    market: Path, tmp_path: Path
) -> None:
    import re

    from quarry.tracking import load_packaged

    spec = load_workflow(write_spec(tmp_path / "a.yaml", small_spec(market)))
    said: list[str] = []
    heard: list[str] = []
    cache = StepCache(tmp_path / "steps")
    first = run_workflow(spec, tmp_path / "o1", cache=cache, say=said.append,
                         progress=heard.append)  # fmt: skip
    timed = [m for m in said if re.fullmatch(r"\w+: ran in \d+\.\d s", m)]
    assert [m.split(":")[0] for m in timed] == ["features", "train", "backtest", "gate"]
    rounds = [m for m in heard if m.startswith("boosting round")]
    assert [m.split(":")[0] for m in rounds] == [f"boosting round {i}/30" for i in range(1, 31)]
    last = re.fullmatch(r"boosting round 30/30: valid l2 (\S+), best (\S+) at round (\d+)",
                        rounds[-1])  # fmt: skip
    assert last is not None, rounds[-1]
    model = load_packaged("small", first.results["model_version"]).estimator
    assert int(last.group(3)) == model.best_iteration  # the round early stopping kept
    losses = [float(m.split("valid l2 ")[1].split(",")[0]) for m in rounds]
    assert float(last.group(2)) == min(losses)
    assert any(m.startswith("features: ") and "/" in m for m in heard)  # the chunks
    said.clear()
    run_workflow(spec, tmp_path / "o2", cache=cache, say=said.append)
    assert {"features: cached", "train: cached", "backtest: cached"} <= set(said)
