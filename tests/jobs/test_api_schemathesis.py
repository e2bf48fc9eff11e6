"""Schemathesis against the API's own OpenAPI spec, with a valid token: whatever it sends,
the service answers without a server error (5xx)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from quarry.jobs import JobStore
from quarry.jobs._api import create_app
from quarry.jobs._manifest import Resources

_HOME = Path(tempfile.mkdtemp(prefix="quarry-schemathesis-"))
_STORE = JobStore(f"sqlite:///{_HOME / 'jobs.db'}")
_TOKEN = _STORE.create_token("ann", "alpha")
_APP = create_app(_STORE, capacity=Resources(cpus=4, memory="8Gi"), logs=_HOME / "logs")
schema = schemathesis.openapi.from_asgi("/openapi.json", _APP)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {_TOKEN}"})
    assert response.status_code < 500, (case.method, case.path, response.text[:300])
