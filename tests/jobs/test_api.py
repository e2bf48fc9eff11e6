"""The REST API over a real job store: submission and its 422s, tokens and projects,
listing, showing, cancelling, logs, health and metrics."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quarry.jobs import JobStore, Worker
from quarry.jobs._api import create_app
from quarry.jobs._manifest import Resources


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, JobStore, dict[str, str], Path]]:
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        app = create_app(store, capacity=Resources(cpus=4, memory="8Gi"), logs=tmp_path / "logs")
        tokens = {name: store.create_token(name, project)
                  for name, project in (("ann", "alpha"), ("bob", "beta"))}  # fmt: skip
        with TestClient(app) as client:
            yield client, store, tokens, tmp_path


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _manifest(**changes: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"name": "hello", "project": "alpha",
                         "resources": {"cpus": 1, "memory": "256Mi"},
                         "run": {"command": ["python3", "-c", "print('hi')"]}}  # fmt: skip
    m.update(changes)
    return m


def test_submit_show_list_and_run(setup: Any) -> None:
    client, store, tokens, tmp_path = setup
    r = client.post("/v1/jobs", json=_manifest(), headers=_auth(tokens["ann"]))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["status"] == "queued" and job["resources"]["memory"] == 256 << 20
    Worker(store, tmp_path / "logs", cpus=2, memory=2 << 30).run(until_idle=True, every=0.05)
    shown = client.get(f"/v1/jobs/{job['id']}", headers=_auth(tokens["ann"])).json()
    assert shown["status"] == "succeeded"
    assert [a["outcome"] for a in shown["attempts"]] == ["succeeded"]
    logs = client.get(f"/v1/jobs/{job['id']}/logs", headers=_auth(tokens["ann"]))
    assert logs.text.strip() == "hi"
    followed = client.get(f"/v1/jobs/{job['id']}/logs?follow=true", headers=_auth(tokens["ann"]))
    assert followed.text.strip() == "hi"  # a finished job's stream ends
    listed = client.get("/v1/jobs?status=succeeded", headers=_auth(tokens["ann"])).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["total"] == 1


@pytest.mark.parametrize(
    ("manifest", "path"),
    [
        (_manifest(cpu=2), "cpu"),
        (_manifest(resources={"cpus": -1, "memory": "1Gi"}), "resources.cpus"),
        ({"name": "x", "project": "alpha"}, "run"),
    ],
)
def test_bad_manifests_get_422_with_the_field_path(
    setup: Any, manifest: dict[str, Any], path: str
) -> None:
    client, _, tokens, _ = setup
    r = client.post("/v1/jobs", json=manifest, headers=_auth(tokens["ann"]))
    assert r.status_code == 422
    assert path in [p["path"] for p in r.json()["detail"]], r.json()


def test_oversize_resources_name_the_capacity(setup: Any) -> None:
    client, _, tokens, _ = setup
    big = _manifest(resources={"cpus": 1, "memory": "64Gi"})
    r = client.post("/v1/jobs", json=big, headers=_auth(tokens["ann"]))
    assert r.status_code == 422
    problem = r.json()["detail"][0]
    assert problem["path"] == "resources.memory" and "8Gi" in problem["message"]


def test_tokens_see_only_their_projects(setup: Any) -> None:
    client, _, tokens, _ = setup
    job = client.post("/v1/jobs", json=_manifest(), headers=_auth(tokens["ann"])).json()
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers=_auth("qt_nope")).status_code == 401
    assert client.get(f"/v1/jobs/{job['id']}", headers=_auth(tokens["bob"])).status_code == 403
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=_auth(tokens["bob"]))
    assert r.status_code == 403
    assert client.get("/v1/jobs", headers=_auth(tokens["bob"])).json()["total"] == 0
    r = client.post("/v1/jobs", json=_manifest(), headers=_auth(tokens["bob"]))
    assert r.status_code == 403  # bob is not in alpha
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=_auth(tokens["ann"]))
    assert r.json()["status"] == "cancelled"


def test_health_and_metrics(setup: Any) -> None:
    client, store, tokens, tmp_path = setup
    for _ in range(3):
        client.post("/v1/jobs", json=_manifest(), headers=_auth(tokens["ann"]))
    assert client.get("/healthz").json()["status"] == "ok"
    text = client.get("/metrics").text
    assert "quarry_queue_depth 3" in text and 'quarry_jobs{status="queued"} 3' in text
    Worker(store, tmp_path / "logs", cpus=4, memory=4 << 30).run(until_idle=True, every=0.05)
    text = client.get("/metrics").text
    assert 'quarry_attempts_total{outcome="succeeded"} 3' in text
    assert "quarry_scheduling_latency_seconds_count 3" in text
