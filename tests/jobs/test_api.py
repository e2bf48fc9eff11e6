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
    client, store, tokens, _ = setup
    job = client.post("/v1/jobs", json=_manifest(), headers=_auth(tokens["ann"])).json()
    assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers=_auth("qt_nope")).status_code == 401
    # another project's job answers exactly as a missing one: its existence does not leak
    for method, suffix in (("GET", ""), ("GET", "/logs"), ("POST", "/cancel")):
        theirs = client.request(method, f"/v1/jobs/{job['id']}{suffix}",
                                headers=_auth(tokens["bob"]))  # fmt: skip
        missing = client.request(method, f"/v1/jobs/999{suffix}", headers=_auth(tokens["bob"]))
        assert theirs.status_code == missing.status_code == 404
        assert theirs.json() == {"detail": f"no job {job['id']} in your projects"}
        assert missing.json() == {"detail": "no job 999 in your projects"}
    assert store.job(job["id"]).status == "queued"  # type: ignore[union-attr]
    assert client.get("/v1/jobs", headers=_auth(tokens["bob"])).json()["total"] == 0
    r = client.post("/v1/jobs", json=_manifest(), headers=_auth(tokens["bob"]))
    assert r.status_code == 403  # bob is not in alpha
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=_auth(tokens["ann"]))
    assert r.json()["status"] == "cancelled"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus exposition parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def test_health_and_metrics(setup: Any) -> None:
    client, store, tokens, tmp_path = setup
    for _ in range(3):
        client.post("/v1/jobs", json=_manifest(), headers=_auth(tokens["ann"]))
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=")
    m = _samples(r.text)
    assert m[("quarry_queue_depth", ())] == 3 and m[("quarry_jobs", (("status", "queued"),))] == 3
    Worker(store, tmp_path / "logs", cpus=4, memory=4 << 30).run(until_idle=True, every=0.05)
    m = _samples(client.get("/metrics").text)
    assert m[("quarry_attempts_total", (("outcome", "succeeded"),))] == 3
    assert m[("quarry_scheduling_latency_seconds_count", ())] == 3
    assert m[("quarry_scheduling_latency_seconds_bucket", (("le", "+Inf"),))] == 3
    # every job here started within a minute of its submission: all in the 60 s bucket
    assert m[("quarry_scheduling_latency_seconds_bucket", (("le", "60.0"),))] == 3
    assert m[("quarry_api_request_seconds_count", (("method", "POST"), ("route", "/v1/jobs")))] == 3


def test_healthz_shows_each_loop_and_its_errors(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from quarry.jobs import LoopHealth

    worker, watchdog = LoopHealth("worker w1", every=0.1), LoopHealth("watchdog")
    worker.passed()
    watchdog.failed(RuntimeError("database is locked"))
    watchdog.passed()
    watchdog.last_pass = datetime.now(UTC) - timedelta(seconds=120)  # and none since
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        app = create_app(store, capacity=Resources(cpus=1, memory="1Gi"), logs=tmp_path,
                         loops=[worker, watchdog])  # fmt: skip
        with TestClient(app) as client:
            health = client.get("/healthz").json()
            m = _samples(client.get("/metrics").text)
    assert health["status"] == "degraded" and health["stale_loops"] == ["watchdog"]
    assert health["loops"]["watchdog"]["errors"] == 1
    assert health["loops"]["watchdog"]["last_error"] == "RuntimeError: database is locked"
    assert health["loops"]["worker w1"]["passes"] == 1
    assert m[("quarry_loop_errors_total", (("loop", "watchdog"),))] == 1
    stamp = m[("quarry_loop_last_pass_timestamp_seconds", (("loop", "watchdog"),))]
    assert stamp == pytest.approx(watchdog.last_pass.timestamp())


def test_a_revoked_token_answers_401(setup: Any) -> None:
    client, store, tokens, _ = setup
    assert client.get("/v1/jobs", headers=_auth(tokens["ann"])).status_code == 200
    listed = {t.user: t for t in store.tokens()}
    assert listed["ann"].last_used_at is not None and listed["bob"].last_used_at is None
    assert listed["ann"].projects == ["alpha"]
    assert store.revoke_token(listed["ann"].id) is True
    assert store.revoke_token(listed["ann"].id) is False
    assert client.get("/v1/jobs", headers=_auth(tokens["ann"])).status_code == 401
    assert client.get("/v1/jobs", headers=_auth(tokens["bob"])).status_code == 200


def test_a_queued_job_says_why_it_waits_and_where_it_is(tmp_path: Path) -> None:
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        app = create_app(store, capacity=Resources(cpus=4, memory="8Gi"), logs=tmp_path,
                         free=lambda: [(1.0, 4 << 30), (0.5, 8 << 30)])  # fmt: skip
        token = store.create_token("ann", "alpha")
        with TestClient(app) as client:
            asks = ({"cpus": 1}, {"cpus": 2}, {"cpus": 1, "memory": "6Gi"}, {"cpus": 1})
            ids = [client.post("/v1/jobs", json=_manifest(resources=r), headers=_auth(token))
                   .json()["id"] for r in asks]  # fmt: skip
            shown = [client.get(f"/v1/jobs/{i}", headers=_auth(token)).json() for i in ids]
    assert [s["waiting"] for s in shown] == [
        {"position": 0, "why": "next to start"},
        {"position": 1, "why": "no worker has 2 free cpus (most free now: 1)"},
        {"position": 2, "why": "no worker has 1 cpus and 6 GiB of memory free at once"},
        {"position": 3, "why": "behind 3 queued jobs"},
    ]
    assert shown[0]["output"] is None  # no outputs folder given


def test_cancelling_an_ended_job_is_409_and_bad_parameters_are_problems(setup: Any) -> None:
    client, store, tokens, tmp_path = setup
    job = client.post("/v1/jobs", json=_manifest(), headers=_auth(tokens["ann"])).json()
    Worker(store, tmp_path / "logs", cpus=2, memory=2 << 30).run(until_idle=True, every=0.05)
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=_auth(tokens["ann"]))
    assert r.status_code == 409
    assert r.json()["detail"] == f"job {job['id']} already succeeded: nothing was cancelled"
    r = client.get("/v1/jobs?limit=0", headers=_auth(tokens["ann"]))
    assert r.status_code == 422
    message = "limit: Input should be greater than or equal to 1"
    assert r.json()["detail"] == [{"path": "limit", "message": message}]
