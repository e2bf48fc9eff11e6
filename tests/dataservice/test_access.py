"""Each access rule of the data service, over HTTP and Flight: public, project, private;
no token; another project's token; a job's own token limited to what its manifest declared;
the audit log, for the dataset's owner."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from quarry.data import connect
from quarry.dataservice._app import etag
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


def test_a_jobs_token_opens_no_other_api(service: Service) -> None:
    """A job's own token reads data; it is not its user's token on the job API (it could
    otherwise submit a job declaring what its own manifest left out)."""
    from pathlib import Path

    from fastapi.testclient import TestClient

    from quarry.jobs import Resources
    from quarry.jobs._api import create_app

    _, token = _run_job(service, "carl", [{"dataset": "alpha", "mode": "ro"}])
    assert service.jobs.authenticate(token) is None
    assert service.jobs.identify(token) is not None
    app = create_app(service.jobs, capacity=Resources(cpus=4), logs=Path("/nonexistent"))
    with TestClient(app) as client:
        answer = client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert service.jobs.tokens()[-1].user == "bob"  # job tokens are not listed


@pytest.mark.parametrize("end", ["requeue", "cancel", "fail"])
def test_a_jobs_token_ends_however_its_attempt_does(service: Service, end: str) -> None:
    job_id, token = _run_job(service, "carl", [{"dataset": "alpha", "mode": "ro"}])
    assert service.jobs.identify(token) is not None
    attempt = service.jobs.attempts(job_id)[0].id
    if end == "requeue":
        service.jobs.requeue(attempt, "the server stopped")
    elif end == "cancel":
        service.jobs.cancel(job_id)
    else:
        service.jobs.finish(attempt, "failed", exit_code=1)
    assert service.jobs.identify(token) is None
    if end == "requeue":  # claimed again: a new token, and the old one stays dead
        (again,) = service.jobs.claim("w", cpus=64, memory=1 << 40)
        assert service.jobs.identify(again.env[DATA_TOKEN_VARIABLE]) is not None
        assert service.jobs.identify(token) is None


def test_an_owner_reads_their_dataset_outside_its_project(service: Service) -> None:
    service.jobs.add_dataset("dans", str(service.store), owner="dan", project="alpha",
                             visibility="project")  # fmt: skip
    dan = service.jobs.create_token("dan", "gamma")
    time.sleep(AUTH_TTL)
    assert status(service, "dans", dan) == 200
    assert status(service, "dans", service.tokens["bob"]) == 403


def test_files_and_the_cache_check_follow_the_rules(service: Service) -> None:
    bob, ann = service.tokens["bob"], service.tokens["ann"]
    base = service.url + "/v1/datasets"
    assert raw_get(f"{base}/annsown/files", bob)[0] == 403
    code, _, body = raw_get(f"{base}/market/files", bob)
    assert code == 200
    first = json.loads(body)["files"][0]["path"]
    assert raw_get(f"{base}/annsown/files/{first}", bob)[0] == 403
    assert raw_get(f"{base}/market/files/{first}", bob)[0] == 200
    for sneaky in ("..%2F..%2Fjobs.db", "bars/..%2F..%2Fjobs.db", "%2e%2e/%2e%2e/etc/passwd"):
        assert raw_get(f"{base}/market/files/{sneaky}", bob)[0] == 404, sneaky
    commit = etag(service.stack.service.catalog.commit(service.jobs.dataset("annsown")))
    # a 304 is an answer too: not for a caller who may not read the dataset
    code, _, _ = raw_get(f"{base}/annsown/bars", bob, {"If-None-Match": f'"{commit}"'})
    assert code == 403
    assert raw_get(f"{base}/annsown/bars", ann, {"If-None-Match": f'"{commit}"'})[0] == 304
    routes = [r.route for r in service.jobs.reads("market")]
    assert routes[:2] == ["file", "files"]  # the download was audited, newest first


def test_a_hand_made_flight_ticket_follows_the_rules(service: Service) -> None:
    import pyarrow.flight as flight

    client = flight.FlightClient(service.flight.replace("grpc://", "grpc+tcp://"))
    commit = service.stack.service.catalog.commit(service.jobs.dataset("annsown"))
    ticket = flight.Ticket(f"0/1 {commit}\n/v1/datasets/annsown/bars".encode())
    options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {service.tokens['bob']}".encode())]
    )
    with pytest.raises(flight.FlightUnauthorizedError, match="dataset 'annsown' is private"):
        client.do_get(ticket, options).read_all()
    for bad in (f"0/100000 {commit}", f"3/2 {commit}", "x"):
        forged = flight.Ticket(f"{bad}\n/v1/datasets/market/bars".encode())
        with pytest.raises(flight.FlightServerError, match="not one of ours"):
            client.do_get(forged, options).read_all()
    client.close()


def test_a_store_made_again_in_the_same_place_is_a_new_commit(
    service: Service, tmp_path: Path
) -> None:
    """Versions start again from 0 in a store made again where one was: the commit must
    still differ, or a reader's cache would answer with the old store's data."""
    import shutil

    from quarry.data import Store, generate

    place = tmp_path / "again"
    generate(Store(place), instruments=3, days=40, seed=1)
    service.jobs.add_dataset("again", str(place), owner="ann", project="alpha",
                             visibility="public")  # fmt: skip
    catalog = service.stack.service.catalog
    first = catalog.commit(service.jobs.dataset("again"))
    shutil.rmtree(place)
    time.sleep(0.01)
    generate(Store(place), instruments=3, days=40, seed=2)
    second = catalog.commit(service.jobs.dataset("again"))
    assert first.split("#")[0] == second.split("#")[0]  # the same versions...
    assert first != second  # ...of another store
