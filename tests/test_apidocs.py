"""Every API's /docs: rendered on the server from its own OpenAPI document, with no address
outside the server (FastAPI's Swagger UI came from a CDN)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from quarry._apidocs import DOCS_CSP
from quarry.jobs import JobStore
from quarry.jobs._api import create_app
from quarry.jobs._manifest import Resources


def test_the_job_apis_docs_list_every_operation_and_load_nothing(tmp_path: Path) -> None:
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        app = create_app(store, capacity=Resources(cpus=1, memory="1Gi"), logs=tmp_path)
        with TestClient(app) as client:
            r = client.get("/docs")
            spec = client.get("/openapi.json").json()
            assert client.get("/redoc").status_code == 404
    assert r.status_code == 200 and r.headers["content-security-policy"] == DOCS_CSP
    page = r.text
    operations = [(m.upper(), p) for p, item in spec["paths"].items() for m in item]
    assert len(operations) >= 7
    for method, path in operations:
        assert f"<code>{method} {path}</code>" in page.replace("&#x27;", "'"), (method, path)
    assert "Queue a job from its manifest" in page  # a route's summary
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page and "style=" not in page
