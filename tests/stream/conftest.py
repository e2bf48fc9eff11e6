"""Brokers (the machine's NATS JetStream and Redis, and in-process), fresh subjects per test,
and a model registered at its champion for the streams to score with."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from quarry.data import Store, generate
from quarry.features import DEFAULT_LABEL, CSZScoreNorm, Fillna, Pipeline, materialize
from quarry.models import Recipe, Segments, train
from quarry.stream import Broker, connect
from quarry.stream._brokers import Message
from quarry.tracking import register, set_alias

BROKER_URLS = {
    "memory": "memory://tests",
    "nats": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
}
# Qlib's regularization (lambda_l1 206) leaves a synthetic market's small returns no split:
# every instrument would get one score, and no test could tell a wrong score from a right one
PARAMS = {"num_boost_round": 10, "lambda_l1": 0.0, "lambda_l2": 1.0, "num_leaves": 15}
ROW_WISE = "s-lgb-rows"  # a second model, whose processors are all row-wise
LINEAR = "s-linear"  # a ridge regression, row-wise too
# Features the champion reads: windows over minute bars as over days.
FEATURES = {
    "REV5": "-($close / Ref($close, 5) - 1)",
    "VOL10": "Std($close / Ref($close, 1), 10)",
    "VMA5": "$volume / Mean($volume, 5)",
}


def drain(broker: Broker, subject: str, at_least: int = 0) -> list[Message]:
    """Every message on ``subject``, acknowledged, through a consumer of its own: fetched a
    few at a time until ``at_least`` are in (a fetch that finds nothing under load is not the
    end; a minute at most), then until a fetch finds nothing more, so that extras (a message
    published twice, say) are caught too."""
    sub = broker.subscribe(subject, "check")
    out: list[Message] = []
    deadline = time.monotonic() + 60.0
    while True:
        batch = sub.fetch(16, 1.0)
        for m in batch:
            m.ack()
        out.extend(batch)
        if not batch and (len(out) >= at_least or time.monotonic() > deadline):
            return out


@dataclass
class Subjects:
    prefix: str

    def __getattr__(self, name: str) -> str:
        return f"{self.prefix}.{name}"

    def config(self) -> dict[str, str]:
        names = ("bars", "scores", "positions", "orders", "features", "dead_letter")
        return {n: getattr(self, n) for n in names}


@pytest.fixture
def subjects() -> Subjects:
    return Subjects(f"t{uuid.uuid4().hex[:12]}")


def open_broker(kind: str, subjects: Subjects) -> Iterator[Broker]:
    broker = connect(BROKER_URLS[kind])
    try:
        yield broker
    finally:
        for subject in subjects.config().values():
            broker.purge(subject)
        broker.close()


@pytest.fixture(params=["memory", "nats", "redis"])
def broker(request: pytest.FixtureRequest, subjects: Subjects) -> Iterator[Broker]:
    yield from open_broker(request.param, subjects)


@dataclass
class Champion:
    name: str
    version: int
    tracking_uri: str
    run_id: str
    metadata: dict[str, object]


@pytest.fixture(scope="package")
def champion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Champion]:
    """A LightGBM model on FEATURES (cross-sectionally normalized), trained on a synthetic
    daily market and registered as s-lgb at its champion; and with Fillna alone, a LightGBM
    model registered as ROW_WISE and a linear one as LINEAR, each at its champion."""
    root = tmp_path_factory.mktemp("stream-model")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUARRY_HOME", str(root / "home"))
        mp.setenv("QUARRY_TRACKING_URI", uri)
        store = Store(root / "store")
        generate(store, 40, 200, seed=7, alpha_ic=0.1)
        materialize(store, FEATURES, root / "features.parquet", label=DEFAULT_LABEL)
        frame = pl.read_parquet(root / "features.parquet")
        steps = Pipeline([CSZScoreNorm(), Fillna()])
        processed = steps.fit_transform(frame)
        segments = Segments.parse(
            {"train": "2015-01-02:2015-06-30", "valid": "2015-07-08:2015-08-31",
             "test": "2015-09-08:2015-10-15"}
        )  # fmt: skip
        recipe = Recipe(FEATURES, DEFAULT_LABEL, steps)
        result = train(processed, segments, model="lightgbm", params=PARAMS,
                       experiment="stream", recipe=recipe)  # fmt: skip
        assert result.run_id is not None
        meta = {
            "project": "default",
            "description": "A LightGBM model for the stream tests.",
            "authors": ["ann"],
            "licence": "proprietary",
            "model_type": "lightgbm",
            "label": DEFAULT_LABEL,
            "features": [{"name": n, "expression": e} for n, e in FEATURES.items()],
            "training_window": {"start": "2015-01-02", "end": "2015-06-30"},
            "data": {"store": str(root / "store"), "as_of": None, "universe": None,
                     "commits": {}},
            "workflow": {"path": "/srv/research/stream.yaml", "sha256": "0" * 64},
        }  # fmt: skip
        version = register(result.run_id, "s-lgb", meta)
        set_alias("s-lgb", "champion", version)
        # row-wise processors at inference (the label's are skipped): the stream scores it
        # from its matrix
        rows = Pipeline([CSZScoreNorm(fields="label"), Fillna()])
        result = train(rows.fit_transform(frame), segments, model="lightgbm",
                       params=PARAMS, experiment="stream",
                       recipe=Recipe(FEATURES, DEFAULT_LABEL, rows))  # fmt: skip
        assert result.run_id is not None
        set_alias(ROW_WISE, "champion", register(result.run_id, ROW_WISE, meta))
        result = train(rows.fit_transform(frame), segments, model="linear", experiment="stream",
                       recipe=Recipe(FEATURES, DEFAULT_LABEL, rows))  # fmt: skip
        assert result.run_id is not None
        linear = {**meta, "model_type": "linear"}
        set_alias(LINEAR, "champion", register(result.run_id, LINEAR, linear))
        yield Champion("s-lgb", version, uri, result.run_id, meta)


@pytest.fixture
def tracking(champion: Champion, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Champion:
    monkeypatch.setenv("QUARRY_TRACKING_URI", champion.tracking_uri)
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "home"))
    return champion
