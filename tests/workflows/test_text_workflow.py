"""The text alpha planted in the synthetic stories is found end to end: stories in the
store, scored, aggregated to bars point in time, read by expressions, a model trained and
measured out of sample by a workflow; with no alpha planted, the same path finds nothing."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from quarry.data import Store, generate
from quarry.data._event_scores import write_scores
from quarry.models._text_head import HEAD_SCORER, fit_text_head
from quarry.workflows import load_workflow, run_workflow
from tests.workflows.helpers import small_spec, write_spec

TEXT = {
    "SENT": "$news_sent",
    "SENT_VADER": "$news_sent_vader",
    "DECAY": "$news_decay_hl2",
    "COUNT": "$news_count",
}


def _run(tmp_path: Path, text_ic: float, features: dict[str, str], name: str) -> dict:
    store = tmp_path / f"store-{name}"
    # no price alpha: whatever the model finds comes from the stories
    generate(Store(store), 200, 420, seed=11, alpha_ic=0.0, text_rate=0.6, text_ic=text_ic)
    if any("embed" in e for e in features.values()):
        head = fit_text_head(Store(store), step=42, min_train_days=150)
        write_scores(Store(store), head.scores, HEAD_SCORER, head.version)
    spec = small_spec(
        store,
        name=name,
        features={"set": "none", "extra": features},
        model={"type": "linear", "seed": 0, "params": {}},
        segments={
            "train": "2015-01-02:2015-10-30",
            "valid": "2015-11-09:2016-01-29",
            "test": "2016-02-08:2016-08-31",
        },
        tracking={"experiment": name, "register": name, "description": "text alpha test"},
    )
    out = tmp_path / f"run-{name}"
    run_workflow(load_workflow(write_spec(tmp_path / f"{name}.yaml", spec)), out)
    return json.loads((out / "results.json").read_text())


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "home"))


def test_the_planted_text_alpha_is_recovered_and_noise_is_not(tmp_path: Path) -> None:
    planted = _run(tmp_path, 0.1, TEXT, "planted")
    noise = _run(tmp_path, 0.0, TEXT, "noise")
    # ~140 test days x 200 instruments: a daily Rank IC's mean has a standard error near
    # 0.006; the stories reach about half the instruments a day
    assert planted["rank_ic"] > 0.03, planted
    assert abs(noise["rank_ic"]) < 0.02, noise
    assert planted["rank_icir"] > 0.2, planted


def test_the_embedding_heads_scores_carry_the_alpha(tmp_path: Path) -> None:
    planted = _run(tmp_path, 0.1, {"EMBED": "$news_decay_embed_hl2"}, "embed")
    assert planted["rank_ic"] > 0.012, planted  # about 2 standard errors; 0.024 here


def test_a_new_story_reruns_only_workflows_that_read_stories(tmp_path: Path) -> None:
    from quarry.data import ingest_frame, table_spec
    from quarry.data._events import event_versions

    store = tmp_path / "store"
    generate(Store(store), 30, 300, seed=2, text_rate=0.3)
    runs = {}
    prices = {"R": "$close / Ref($close, 5)"}
    for name, extra in (("prices", prices), ("stories", {**prices, "N": "$news_count"})):
        spec = small_spec(store, name=name, features={"set": "none", "extra": extra},
                          model={"type": "linear", "seed": 0, "params": {}},
                          tracking={"experiment": name, "register": name,
                                    "description": "a text test"})  # fmt: skip
        path = write_spec(tmp_path / f"{name}.yaml", spec)
        run_workflow(load_workflow(path), tmp_path / f"{name}-1")
        runs[name] = path
    # a vendor's late story about an instrument, delivered long after the history
    one = event_versions(Store(store)).filter(~pl.col("retracted")).head(1)
    late = one.with_columns(pl.lit("late-1").alias("event_id"))
    ingest_frame(Store(store), table_spec("events"), late, source="late")
    again = run_workflow(load_workflow(runs["prices"]), tmp_path / "prices-2")
    stories = run_workflow(load_workflow(runs["stories"]), tmp_path / "stories-2")
    # (the gate runs again either way: the first run's model is the champion now)
    assert [again.steps[s] for s in ("features", "train", "backtest")] == ["cached"] * 3
    assert stories.steps["features"] == "ran", stories.steps
