"""Each access rule of the data service, over HTTP and Flight: public, project, private;
no token; another project's token; a job's own token limited to what its manifest declared;
the audit log, for the dataset's owner."""

from __future__ import annotations

import json
import time

import pytest

from quarry.data import connect
from quarry.exceptions import AccessDenied, AuthenticationError, DataError, ManifestError
from quarry.exceptions import PermissionDenied as Forbidden
from quarry.jobs import DATA_TOKEN_VARIABLE, Manifest
from tests.dataservice.conftest import AUTH_TTL, Service, raw_get

pytestmark = pytest.mark.service

BARS = "/v1/datasets/{}/bars?fields=close&start=2015-03-02&end=2015-03-06"


def status(service: Service, name: str, token: str | None) -> int:
    return int(raw_get(service.url + BARS.format(name), token)[0])


def test_no_token_is_401_and_a_wrong_one_too(service: Service) -> None:
    assert status(service, "market", None) == 401
    assert status(service, "market", "qt_not-a-token") == 401
    with pytest.raises(AuthenticationError, match="401 give a valid API token"):
        connect(service.url, "qt_nope", cache=False).bars("market", ["close"])
    with pytest.raises(AuthenticationError, match="401"):
        connect(service.flight, "qt_nope").bars("market", ["close"])


@pytest.mark.parametrize(
    ("user", "allowed"),
    [("ann", {"market", "alpha", "annsown"}), ("carl", {"market", "alpha"}), ("bob", {"market"})],
)
def test_each_visibility_reads_as_its_rule_says(
    service: Service, user: str, allowed: set[str]
) -> None:
    token = service.tokens[user]
    for name in ("market", "alpha", "annsown"):
        code = status(service, name, token)
        assert code == (200 if name in allowed else 403), (user, name, code)
    listed = {d["name"] for d in connect(service.url, token, cache=False).datasets()}
    assert listed == allowed


def test_a_refusal_names_the_dataset_and_why(service: Service) -> None:
    code, _, body = raw_get(service.url + BARS.format("alpha"), service.tokens["bob"])
    assert code == 403
    assert json.loads(body)["detail"] == (
        "dataset 'alpha' is project: only the members of project 'alpha' may read it"
    )
    with pytest.raises(Forbidden, match="dataset 'annsown' is private: only its owner 'ann'"):
        connect(service.url, service.tokens["carl"], cache=False).bars("annsown")
    with pytest.raises(Forbidden, match="dataset 'alpha' is project"):
        connect(service.flight, service.tokens["bob"]).bars("alpha")
    with pytest.raises(DataError, match="no dataset 'nope'"):
        connect(service.url, service.tokens["bob"], cache=False).bars("nope")


def test_the_audit_log_records_each_read_for_the_owner_only(service: Service) -> None:
    bob = connect(service.url, service.tokens["bob"], cache=False)
    got = bob.bars("market", ["close"], start="2015-03-02", end="2015-03-06", as_of="2015-06-01")
    connect(service.flight, service.tokens["bob"]).bars("market", ["close"], end="2015-02-01")
    reads = connect(service.url, service.tokens["ann"], cache=False).audit("market")
    http, flight = reads[1], reads[0]
    assert (http["user"], http["route"], http["rows"]) == ("bob", "bars", got.height)
    assert http["as_of"] == "2015-06-01"
    assert (
        http["query"] == "adjust=raw&as_of=2015-06-01&end=2015-03-06&fields=close&start=2015-03-02"
    )
    assert http["commit"] == service.stack.service.catalog.commit(service.jobs.dataset("market"))
    assert "bars@" in http["commit"]
    assert flight["user"] == "bob" and flight["route"].startswith("bars (flight 1/")
    assert http["bytes"] > 0 and http["job_id"] is None
    with pytest.raises(Forbidden, match="only its owner 'ann' reads its audit log"):
        connect(service.url, service.tokens["carl"], cache=False).audit("market")


def _run_job(service: Service, user: str, data: list[dict[str, str]]) -> tuple[int, str]:
    """Submit a job declaring ``data`` as ``user`` and claim it: its id and its own token."""
    manifest = Manifest.model_validate(
        {
            "name": "reader",
            "project": "alpha" if user != "bob" else "beta",
            "run": {"command": ["true"]},
            "data": data,
        }
    )
    job_id = service.jobs.submit(manifest, owner=user)
    (claimed,) = service.jobs.claim("w", cpus=64, memory=1 << 40)
    assert claimed.job_id == job_id
    return job_id, claimed.env[DATA_TOKEN_VARIABLE]


def test_a_job_reads_only_what_it_declared(service: Service) -> None:
    job_id, token = _run_job(service, "carl", [{"dataset": "alpha", "mode": "ro"}])
    assert status(service, "alpha", token) == 200
    # market is public and carl may read it, but the job did not declare it
    code, _, body = raw_get(service.url + BARS.format("market"), token)
    assert code == 403
    assert f"job {job_id} did not declare dataset 'market'" in json.loads(body)["detail"]
    with pytest.raises(Forbidden, match="did not declare"):
        connect(service.flight, token).bars("market")
    listed = {d["name"] for d in connect(service.url, token, cache=False).datasets()}
    assert listed == {"alpha"}
    connect(service.url, token, cache=False).bars("alpha", ["close"], end="2015-02-01")
    reads = connect(service.url, service.tokens["ann"], cache=False).audit("alpha")
    assert [(r["user"], r["job_id"]) for r in reads] == [("carl", job_id)] * 2
    # the token ends with the attempt (trusted a moment longer by a server that saw it)
    service.jobs.finish(service.jobs.attempts(job_id)[0].id, "succeeded")
    time.sleep(AUTH_TTL)
    assert status(service, "alpha", token) == 401


def test_a_job_cannot_declare_what_its_user_may_not_use(service: Service) -> None:
    manifest = {"name": "x", "project": "beta", "run": {"command": ["true"]}}
    with pytest.raises(AccessDenied, match="dataset 'alpha' is project"):
        service.jobs.submit({**manifest, "data": [{"dataset": "alpha"}]}, owner="bob")
    with pytest.raises(AccessDenied, match="written only by its owner 'ann' and the members"):
        service.jobs.submit(
            {**manifest, "data": [{"dataset": "market", "mode": "rw"}]}, owner="bob"
        )
    with pytest.raises(ManifestError, match=r"data\[0\].dataset: no dataset 'nope'"):
        service.jobs.submit({**manifest, "data": [{"dataset": "nope"}]}, owner="bob")
    service.jobs.submit({**manifest, "data": [{"dataset": "market"}]}, owner="bob")


def test_the_job_api_answers_403_for_a_dataset_the_user_may_not_use(service: Service) -> None:
    from pathlib import Path

    from fastapi.testclient import TestClient

    from quarry.jobs import Resources
    from quarry.jobs._api import create_app

    app = create_app(service.jobs, capacity=Resources(cpus=4), logs=Path("/nonexistent"))
    with TestClient(app) as client:
        answer = client.post(
            "/v1/jobs",
            json={
                "name": "x",
                "project": "beta",
                "run": {"command": ["true"]},
                "data": [{"dataset": "annsown"}],
            },
            headers={"Authorization": f"Bearer {service.tokens['bob']}"},
        )
    assert answer.status_code == 403
    assert "dataset 'annsown' is private" in answer.json()["detail"]
