"""Models trained and registered once for the serving tests, on a small synthetic market.

Three model types, each with its own processors (one cross-sectional, so that a prediction
by date is right only if the whole day is scored together), registered with their metadata
as m-lightgbm, m-linear and m-mlp (in project beta), each at its champion; and m-legacy,
the linear model registered outside Quarry, without metadata. The tracking store is shared
by the package's tests (QUARRY_TRACKING_URI); each test keeps its own QUARRY_HOME (feature
cache).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import polars as pl
import pytest

from quarry.data import Store, generate
from quarry.features import (
    DEFAULT_LABEL,
    CSZScoreNorm,
    Fillna,
    Pipeline,
    RobustZScoreNorm,
    ZScoreNorm,
    materialize,
)
from quarry.jobs import JobStore
from quarry.models import Recipe, Segments, train
from quarry.serve import Catalog, ModelRef, create_app
from quarry.tracking import quiet_mlflow, register, set_alias

FEATURES = {
    "REV5": "-($close / Ref($close, 5) - 1)",
    "MOM20": "$close / Ref($close, 20) - 1",
    "NOISE": "$volume / Mean($volume, 5)",
}
SEGMENTS = {
    "train": "2015-01-02:2015-06-30",
    "valid": "2015-07-08:2015-08-31",
    "test": "2015-09-08:2015-12-15",
}
FIT = {"fit_start": "2015-01-02", "fit_end": "2015-06-30"}
KINDS: dict[str, tuple[dict[str, Any], Callable[[], Pipeline]]] = {
    "lightgbm": ({"num_boost_round": 15}, lambda: Pipeline([CSZScoreNorm(), Fillna()])),
    "linear": ({}, lambda: Pipeline([RobustZScoreNorm(**FIT), Fillna()])),
    "mlp": ({"hidden": [8], "max_epochs": 2}, lambda: Pipeline([ZScoreNorm(**FIT), Fillna()])),
}
SERVED = ("m-lightgbm", "m-linear", "m-mlp", "m-legacy")
PROJECTS = {"m-mlp": "beta"}  # the others are in the default project


def metadata(kind: str, store: Path, project: str = "default") -> dict[str, Any]:
    """What a model of type ``kind`` is registered with (its workflow file is never run
    here: training jobs are only queued)."""
    return {
        "project": project,
        "description": f"A {kind} model for the serving tests.",
        "authors": ["ann"],
        "licence": "proprietary",
        "model_type": kind,
        "label": DEFAULT_LABEL,
        "features": [{"name": n, "expression": e} for n, e in FEATURES.items()],
        "training_window": {"start": "2015-01-02", "end": "2015-06-30"},
        "data": {"store": str(store), "as_of": None, "universe": None, "commits": {}},
        "workflow": {"path": f"/srv/research/{kind}.yaml", "sha256": "0" * 64},
    }


@dataclass
class Trained:
    """The market, its raw features for every day, and the registered models."""

    store: Path
    raw: pl.DataFrame  # instrument, date and FEATURES, as computed from the store
    versions: dict[str, int]  # registered name -> version
    run_ids: dict[str, str]  # model type -> its run


@pytest.fixture(scope="package")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QUARRY_HOME", str(root / "home"))
        mp.setenv("QUARRY_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        store_path = root / "store"
        store = Store(store_path)
        generate(store, 50, 260, seed=5, alpha_ic=0.15)
        materialize(store, FEATURES, root / "features.parquet", label=DEFAULT_LABEL)
        frame = pl.read_parquet(root / "features.parquet")
        versions, run_ids = {}, {}
        for kind, (params, processors) in KINDS.items():
            steps = processors()
            processed = steps.fit_transform(frame)
            recipe = Recipe(FEATURES, DEFAULT_LABEL, steps)
            result = train(processed, Segments.parse(SEGMENTS), model=kind, params=params,
                           experiment="serve", recipe=recipe)  # fmt: skip
            assert result.run_id is not None
            name = f"m-{kind}"
            project = PROJECTS.get(name, "default")
            versions[name] = register(result.run_id, name, metadata(kind, store_path, project))
            set_alias(name, "champion", versions[name])
            run_ids[kind] = result.run_id
        # a version registered outside Quarry, without metadata (no project, no workflow)
        with quiet_mlflow("mlflow.tracking._model_registry.fluent", events=True):
            legacy = mlflow.register_model(f"runs:/{run_ids['linear']}/model", "m-legacy")
        versions["m-legacy"] = int(legacy.version)
        set_alias("m-legacy", "champion", versions["m-legacy"])
        yield Trained(root / "store", frame.drop("LABEL0"), versions, run_ids)


@dataclass
class Api:
    client: Any  # fastapi.testclient.TestClient
    catalog: Catalog
    jobs: JobStore
    tokens: dict[str, str]  # project -> a token of a member of it (only)

    def auth(self, project: str = "default") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[project]}"}


@pytest.fixture(scope="package")
def api(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The three models served in-process (FastAPI's test client), with tokens for the
    default project and for beta."""
    from fastapi.testclient import TestClient

    root = tmp_path_factory.mktemp("api")
    with JobStore(f"sqlite:///{root / 'jobs.db'}") as jobs:
        catalog = Catalog([ModelRef(n) for n in SERVED])
        catalog.start()
        tokens = {p: jobs.create_token(user, p) for user, p in (("ann", "default"),
                                                                ("bob", "beta"))}  # fmt: skip
        app = create_app(catalog, jobs=jobs, store=Store(trained.store))
        with TestClient(app) as client:
            yield Api(client, catalog, jobs, tokens)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any) -> Iterator[str]:
    """``app`` on a real uvicorn server on a free loopback port; its URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(20)
