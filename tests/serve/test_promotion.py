"""On a real server (uvicorn on a loopback port): an alias moved while clients send
predictions continuously loses no request and mixes no versions; overload is answered 503 at
once; a model that gets a champion after the start is served without a restart."""

from __future__ import annotations

import json
import threading
import time
from datetime import date
from typing import Any

import httpx2
import numpy as np
import polars as pl
from mlflow import MlflowClient

from quarry.serve import AliasWatcher, Catalog, ModelRef, create_app
from quarry.tracking import load_packaged, promote, register, set_alias
from tests.serve.conftest import FEATURES, Api, Trained, metadata, running

DAY = date(2015, 11, 10)
CLIENTS = 4


def _body(trained: Trained) -> tuple[bytes, pl.DataFrame]:
    table = (
        trained.raw.filter(pl.col("date") == DAY)
        .sort("instrument")
        .with_columns(pl.col(list(FEATURES)).cast(pl.Float64).fill_nan(None))
    )
    records = [dict(r, date=r["date"].isoformat()) for r in table.to_dicts()]
    return json.dumps({"records": records}).encode(), table


def test_a_promotion_under_load_loses_no_request_and_mixes_no_versions(
    api: Api, trained: Trained
) -> None:
    # two versions that score differently in every row: a lightgbm and a linear model
    old = register(trained.run_ids["lightgbm"], "promo", metadata("lightgbm", trained.store))
    new = register(trained.run_ids["linear"], "promo", metadata("linear", trained.store))
    set_alias("promo", "champion", old)
    body, table = _body(trained)
    expected = {v: np.asarray(load_packaged("promo", v).score(table)) for v in (old, new)}
    assert not np.isclose(expected[old], expected[new]).any()

    catalog = Catalog([ModelRef("promo")])
    catalog.start()
    watcher = AliasWatcher(catalog, every=0.2)
    watcher.start()
    app = create_app(catalog, jobs=api.jobs, max_in_flight=64, watcher=watcher)
    results: list[tuple[float, float, int, str, Any]] = []
    stop = threading.Event()

    def client(url: str) -> None:
        headers = {**api.auth(), "Content-Type": "application/json"}
        with httpx2.Client(base_url=url, headers=headers, timeout=30) as http:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    r = http.post("/v2/models/promo/predict", content=body)
                except httpx2.HTTPError as exc:  # a failed request is a result too
                    results.append((began, time.monotonic(), 0, "", repr(exc)))
                    continue
                answer = r.json() if r.status_code == 200 else r.text
                results.append((began, time.monotonic(), r.status_code,
                                r.headers.get("X-Quarry-Model-Version", ""), answer))  # fmt: skip

    try:
        with running(app) as url:
            threads = [threading.Thread(target=client, args=(url,)) for _ in range(CLIENTS)]
            started = time.monotonic()
            for t in threads:
                t.start()
            time.sleep(1.5)
            promoted_at = time.monotonic()
            promote("promo", new, expected=old, by="test", reason="under load")
            deadline = time.monotonic() + 30
            while catalog.served("promo").version != new:  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the promotion was not followed"
                time.sleep(0.05)
            time.sleep(1.5)
            stop.set()
            for t in threads:
                t.join(30)
            took = time.monotonic() - started
            metrics = httpx2.get(f"{url}/metrics").text
    finally:
        stop.set()
        watcher.stop()

    failed = [(status, answer) for _, _, status, _, answer in results if status != 200]
    assert not failed, failed[:3]
    print(f"{len(results)} predictions in {took:.1f} s: {len(results) / took:.0f} per second")
    assert len(results) > 200
    versions = []
    for _, _, _, header, answer in results:
        version = answer["version"]
        assert header == str(version) and version in (old, new)
        # the whole answer is that version's own: no row from the other one
        np.testing.assert_array_equal([p["score"] for p in answer["predictions"]],
                                      expected[version])  # fmt: skip
        versions.append(version)
    assert versions.count(old) > 0 and versions.count(new) > 0
    # nothing new before the promotion; nothing old once the new version has answered
    assert all(r[4]["version"] == old for r in results if r[1] < promoted_at)
    first_new = min(end for _, end, _, _, answer in results if answer["version"] == new)
    assert all(answer["version"] == new for began, _, _, _, answer in results
               if began > first_new)  # fmt: skip
    counts = {v: _count(metrics, v) for v in (old, new)}
    assert counts == {old: versions.count(old), new: versions.count(new)}
    assert catalog.problems == {}


def _count(metrics: str, version: int) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(metrics):
        for s in family.samples:
            if (s.name == "quarry_serve_predict_seconds_count"
                    and s.labels == {"model": "promo", "version": str(version)}):  # fmt: skip
                return s.value
    return 0.0


class _Held:
    """A registered model whose scoring waits until ``release`` is set: a prediction held
    in flight for as long as the test wants."""

    def __init__(self, inner: Any, entered: threading.Event, release: threading.Event) -> None:
        self.inner, self.entered, self.release = inner, entered, release

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # a long prediction runs in a thread; a few rows of a row-wise model would be scored on
    # the event loop, where holding them would hold the whole server
    row_wise = False

    def score(self, frame: pl.DataFrame) -> Any:
        self.entered.set()
        assert self.release.wait(30)
        return self.inner.score(frame)


def test_overload_is_answered_503_at_once(api: Api, trained: Trained) -> None:
    entered, release = threading.Event(), threading.Event()
    catalog = Catalog(
        [ModelRef("m-linear")],
        loader=lambda name, version: _Held(load_packaged(name, version), entered, release),
    )  # fmt: skip
    catalog.start()
    body, table = _body(trained)
    expected = load_packaged("m-linear", trained.versions["m-linear"]).score(table)
    headers = {**api.auth(), "Content-Type": "application/json"}
    held: list[httpx2.Response] = []
    with running(create_app(catalog, jobs=api.jobs, max_in_flight=1)) as url:
        first = threading.Thread(target=lambda: held.append(
            httpx2.post(f"{url}/v2/models/m-linear/predict", content=body, headers=headers,
                        timeout=60)))  # fmt: skip
        first.start()
        assert entered.wait(30)
        began = time.monotonic()
        r = httpx2.post(f"{url}/v2/models/m-linear/predict", content=body, headers=headers,
                        timeout=10)  # fmt: skip
        waited = time.monotonic() - began
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        assert "1 predictions in flight" in r.json()["detail"]
        assert waited < 1.0
        # the server is not stuck: other routes answer while the prediction is held
        assert httpx2.get(f"{url}/healthz", timeout=5).json()["in_flight"] == 1
        release.set()
        first.join(30)
        assert held[0].status_code == 200
        np.testing.assert_array_equal([p["score"] for p in held[0].json()["predictions"]],
                                      expected)  # fmt: skip
        again = httpx2.post(f"{url}/v2/models/m-linear/predict", content=body,
                            headers=headers, timeout=10)  # fmt: skip
        assert again.status_code == 200  # the slot was given back


def test_serving_every_champion_picks_up_a_model_that_gets_one_later(
    api: Api, trained: Trained
) -> None:
    def loader(name: str, version: int) -> Any:
        if name == "late-broken":
            raise OSError("artifact gone")
        return load_packaged(name, version)

    catalog = Catalog(loader=loader)  # every model at champion: now and later
    catalog.start()
    before = set(catalog.names())
    assert "late" not in before
    late = register(trained.run_ids["linear"], "late", metadata("linear", trained.store))
    broken = register(trained.run_ids["linear"], "late-broken",
                      metadata("linear", trained.store))  # fmt: skip
    registry = MlflowClient()
    try:
        assert catalog.refresh() == []  # registered, but no champion yet: not served
        set_alias("late", "champion", late)
        set_alias("late-broken", "champion", broken)
        assert catalog.refresh() == [("late", 0, late)]
        assert set(catalog.names()) == before | {"late"}
        assert "cannot be loaded (artifact gone)" in catalog.problems["late-broken"]
        assert catalog.refresh() == []  # the broken version is not tried again ...
        loads = catalog.loads
        # ... and the new one answers through the API as the registered version does
        app = create_app(catalog, jobs=api.jobs)
        body, table = _body(trained)
        with running(app) as url:
            r = httpx2.post(f"{url}/v2/models/late/predict", content=body,
                            headers={**api.auth(), "Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 200 and r.json()["version"] == late
        np.testing.assert_allclose([p["score"] for p in r.json()["predictions"]],
                                   load_packaged("late", late).score(table), rtol=1e-6)  # fmt: skip
        assert catalog.loads == loads
        # the broken newcomer's champion removed: nothing to report about it any more
        registry.delete_registered_model_alias("late-broken", "champion")
        catalog.refresh()
        assert "late-broken" not in catalog.problems
    finally:  # other tests serve every champion too
        for name in ("late", "late-broken"):
            registry.delete_registered_model(name)
