"""Schemathesis against the API's own OpenAPI spec, with a valid token: whatever it sends,
the service answers without a server error (5xx).

The service is built by a fixture, so collecting this module creates no database and no app.
(``schemathesis.pytest.from_fixture`` would keep one test per operation, but schemathesis
4.32 reads ``request.node._nodeid``, which pytest 9 no longer has; so each operation's
strategy is drawn here with hypothesis instead.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from quarry.jobs import JobStore
from quarry.jobs._api import create_app
from quarry.jobs._manifest import Resources


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str]:
    """The API's app on a fresh SQLite store, and a token of a member of project alpha."""
    home: Path = tmp_path_factory.mktemp("schemathesis")
    store = JobStore(f"sqlite:///{home / 'jobs.db'}")
    token = store.create_token("ann", "alpha")
    app = create_app(store, capacity=Resources(cpus=4, memory="8Gi"), logs=home / "logs")
    return app, token


@pytest.mark.slow
def test_no_request_makes_a_server_error(service: tuple[object, str]) -> None:
    app, token = service
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 7  # the spec was read (7 operations when this was written)

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            response = case.call(headers={"Authorization": f"Bearer {token}"})
            assert response.status_code < 500, (case.method, case.path, response.text[:300])

        check()
