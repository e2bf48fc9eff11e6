"""Scoring on a schedule, within a universe, and with whatever version the alias points at."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quarry.data._minute_bars import minute_bars
from quarry.features import compute
from quarry.portfolio import topk_dropout
from quarry.stream import Health, OutputStore, StreamConfig, StreamRunner, connect, encode
from quarry.tracking import register, set_alias
from quarry.tracking._models import load_packaged
from tests.stream.conftest import FEATURES, LINEAR, ROW_WISE, Champion, Subjects

T0 = datetime(2024, 1, 2, 14, 30, tzinfo=UTC)


def run_stream(
    tmp_path: Path, subjects: Subjects, bars: pl.DataFrame, **extra: object
) -> tuple[OutputStore, Health]:
    url = f"memory://{uuid.uuid4().hex}"
    broker = connect(url)
    for (when,), part in bars.group_by(["date"], maintain_order=True):
        broker.publish(subjects.bars, encode(when, part.drop("date")))
    config = StreamConfig.model_validate(
        {"broker": url, "model": "s-lgb@champion", "outputs": str(tmp_path / "out"),
         "subjects": subjects.config(), "strategy": {"topk": 2, "n_drop": 1}, **extra}
    )  # fmt: skip
    health = StreamRunner(config, broker=broker).run(idle_exit=0.5)
    return OutputStore(tmp_path / "out"), health


@pytest.mark.parametrize(
    ("schedule", "scored"),
    [("2m", [0, 2, 4]), ("close 14:33", [3])],  # every bar: test_restart's calm stream
)
def test_scores_come_on_the_schedule_and_only_for_the_universe(
    tracking: Champion, subjects: Subjects, tmp_path: Path, schedule: str, scored: list[int]
) -> None:
    bars = minute_bars(6, sessions=1, minutes=6, missing=0.0)
    universe = ["S00001", "S00004"]
    store, _ = run_stream(tmp_path, subjects, bars, schedule=schedule, universe=universe)
    scores = store.table("scores")
    expected = [(T0 + timedelta(minutes=m)).isoformat() for m in scored]
    assert sorted(scores["bar_time"].unique().to_list()) == expected
    assert set(scores["instrument"]) == {"S00001", "S00004"}
    assert store.table("bars_done").height == 6  # every bar updates the features


@pytest.mark.parametrize("model", ["s-lgb", ROW_WISE])
def test_each_bars_scores_are_the_models_scores_of_researchs_features(
    tracking: Champion, subjects: Subjects, tmp_path: Path, model: str
) -> None:
    # The served model scores, bar by bar, what research computes from the same bars: s-lgb
    # through a frame (its processors read the bar's cross-section), ROW_WISE through the
    # stream's matrix of features. Bars with gaps list a changing subset of instruments.
    bars = minute_bars(30, sessions=1, minutes=14, seed=4, missing=0.2)
    store, _ = run_stream(tmp_path, subjects, bars, model=f"{model}@champion")
    scores = store.table("scores")
    packaged = load_packaged(model, 1)
    batch = compute(bars, FEATURES).join(bars.select("instrument", "date"),
                                          on=["instrument", "date"])  # fmt: skip
    times = batch["date"].unique().sort()
    assert scores["bar_time"].n_unique() == len(times) == 14
    for when in times:
        part = batch.filter(pl.col("date") == when)
        expected = dict(zip(part["instrument"], packaged.score(part), strict=True))
        told_apart = len(set(expected.values())) > 1  # the last bars' are, at least
        got = scores.filter(pl.col("bar_time") == when.isoformat())
        assert dict(zip(got["instrument"], got["score"], strict=True)) == pytest.approx(expected)
    assert told_apart  # a model that gives every instrument one score would test nothing


@pytest.mark.parametrize("model", ["s-lgb", ROW_WISE, LINEAR])
def test_a_bar_with_none_of_the_universe_is_processed_with_no_scores(
    tracking: Champion, subjects: Subjects, tmp_path: Path, model: str
) -> None:
    # The third bar lists no instrument of the universe: it is processed (its record, no
    # scores), whatever the model; a scikit-learn model refuses to predict no rows.
    bars = minute_bars(6, sessions=1, minutes=5, missing=0.0)
    third = bars["date"].unique().sort()[2]
    bars = bars.filter((pl.col("date") != third) | (pl.col("instrument") != "S00001"))
    store, health = run_stream(tmp_path, subjects, bars, universe=["S00001"],
                               model=f"{model}@champion")  # fmt: skip
    assert health.bars == health.scored == 5
    records = store.table("bars_done").sort("bar_index")
    assert records["instruments"].to_list() == [1, 1, 0, 1, 1]
    scores = store.table("scores")
    assert scores.height == 4 and set(scores["instrument"]) == {"S00001"}
    assert third.isoformat() not in set(scores["bar_time"])


def test_room_for_the_expected_instruments_is_made_before_the_first_bar(
    tracking: Champion, subjects: Subjects, tmp_path: Path
) -> None:
    config = {"broker": "memory://room", "model": "s-lgb@champion", "subjects": subjects.config()}
    sized = StreamRunner(StreamConfig.model_validate(
        {**config, "outputs": str(tmp_path / "a"), "instruments": 5000}))  # fmt: skip
    universe = StreamRunner(StreamConfig.model_validate(
        {**config, "outputs": str(tmp_path / "b"), "universe": ["S00001", "S00002"]}))  # fmt: skip
    grown = StreamRunner(StreamConfig.model_validate({**config, "outputs": str(tmp_path / "c")}))
    assert sized.online._capacity >= 5000
    assert 2 <= universe.online._capacity < 5000
    assert grown.online._capacity == 0 and grown.online.instruments == []  # the warm-up's own
    for runner in (sized, universe, grown):
        runner._committer.close()
        runner.store.close()


def test_the_stream_follows_the_alias_to_a_new_version(
    tracking: Champion, subjects: Subjects, tmp_path: Path
) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    broker = connect(url)
    config = StreamConfig.model_validate(
        {"broker": url, "model": "s-lgb@champion", "outputs": str(tmp_path / "out"),
         "subjects": subjects.config()}
    )  # fmt: skip
    runner = StreamRunner(config, broker=broker)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, kwargs={"stop": stop})
    thread.start()
    parts = list(minute_bars(5, sessions=1, minutes=6).group_by(["date"], maintain_order=True))

    def publish_and_wait(chunk: list[tuple[tuple[datetime], pl.DataFrame]], total: int) -> None:
        for (when,), part in chunk:
            broker.publish(subjects.bars, encode(when, part.drop("date")))
        deadline = time.monotonic() + 30
        while runner.health.bars < total:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    newer = register(tracking.run_id, tracking.name, tracking.metadata)
    try:
        publish_and_wait(parts[:3], 3)  # type: ignore[arg-type]
        set_alias(tracking.name, "champion", newer)
        time.sleep(1.3)  # the alias is looked at once a second
        publish_and_wait(parts[3:], 6)  # type: ignore[arg-type]
    finally:
        stop.set()
        thread.join(30)
        set_alias(tracking.name, "champion", tracking.version)
    versions = OutputStore(tmp_path / "out").table("bars_done").sort("bar_index")["model_version"]
    assert versions.to_list() == [tracking.version] * 3 + [newer] * 3


def test_the_health_gives_the_last_bars_share_of_missing_features(
    tracking: Champion, subjects: Subjects, tmp_path: Path
) -> None:
    # Four bars: REV5 has no value yet (it reads 5 bars back), the others have, so the share
    # is neither 0 nor 1; the reference is research's features of that bar.
    bars = minute_bars(12, sessions=1, minutes=4, seed=2)
    _, health = run_stream(tmp_path, subjects, bars)
    batch = compute(bars, FEATURES).filter(pl.col("date") == bars["date"].max())
    values = batch.select(list(FEATURES)).to_numpy()
    expected = float(np.isnan(values).mean())
    assert 0 < expected < 1
    assert health.nan_rate == pytest.approx(expected, abs=1e-12)


def test_positions_follow_topk_dropout_over_the_bars_scores(
    subjects: Subjects, tmp_path: Path
) -> None:
    # Bars that each score a different subset of the instruments (a held one may be absent,
    # unscored): the stream's book after each bar is the research rule's over the panel of
    # those scores, NaN where absent (``topk_dropout``), days held included.
    url = f"memory://{uuid.uuid4().hex}"
    config = StreamConfig.model_validate(
        {"broker": url, "features": {"c": "$close"}, "outputs": str(tmp_path / "out"),
         "subjects": subjects.config(), "strategy": {"topk": 3, "n_drop": 1}}
    )  # fmt: skip
    runner = StreamRunner(config, broker=connect(url))
    rng = np.random.default_rng(0)
    every = np.array([f"S{i:02d}" for i in range(12)])
    panel = np.full((25, every.size), np.nan)
    books = []
    for t in range(panel.shape[0]):
        present = np.sort(rng.choice(every.size, size=int(rng.integers(4, 12)), replace=False))
        panel[t, present] = rng.normal(size=present.size)
        out = runner._decide(f"bar{t}", every[present].tolist(), panel[t, present], 1)
        books.append(dict(out["positions"].select("instrument", "days_held").iter_rows()))
    expected = topk_dropout(panel, topk=3, n_drop=1)
    streak = np.zeros(every.size, dtype=np.int64)
    for t, held in enumerate(expected):
        streak = np.where(held, streak + 1, 0)
        assert books[t] == dict(zip(every[held].tolist(), streak[held].tolist(), strict=True))
    assert any(not np.isfinite(panel[t][expected[t - 1]]).all() for t in range(1, 25))
