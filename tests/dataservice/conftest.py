"""A data service on loopback over a small generated market (corrections, delistings, a
universe, fundamentals, corporate actions), its datasets registered three ways:

- ``market``: public, owned by ann of project alpha;
- ``alpha``: the same store, for project alpha's members;
- ``annsown``: the same store, private to ann.

Users: ann and carl (alpha), bob (beta). The HTTP API runs on a real uvicorn server, Flight
on a real Flight server, both in this process; each test's reads go through the network.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from quarry.data import Store, generate
from quarry.dataservice import DataStack, build_data
from quarry.jobs import JobStore

AUTH_TTL = 0.5  # seconds a server trusts a token it has seen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("market") / "store"
    generate(Store(root), instruments=24, days=260, seed=7)
    return root


@dataclass
class Service:
    url: str
    flight: str
    jobs: JobStore
    stack: DataStack
    tokens: dict[str, str]
    store: Path


@pytest.fixture
def service(market: Path, tmp_path: Path) -> Iterator[Service]:
    import uvicorn

    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    jobs = JobStore(db)
    tokens = {
        user: jobs.create_token(user, project)
        for user, project in (("ann", "alpha"), ("carl", "alpha"), ("bob", "beta"))
    }
    jobs.add_dataset("market", str(market), owner="ann", project="alpha", visibility="public")
    jobs.add_dataset("alpha", str(market), owner="ann", project="alpha", visibility="project")
    jobs.add_dataset("annsown", str(market), owner="ann", project="alpha", visibility="private")
    flight_port = free_port()
    stack = build_data(db=db, flight_port=flight_port, standalone=True, auth_ttl=AUTH_TTL)
    server = uvicorn.Server(
        uvicorn.Config(stack.app, host="127.0.0.1", port=free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    stop = threading.Event()
    flight = threading.Thread(target=stack.run_flight, args=(stop,), daemon=True)
    thread.start()
    flight.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield Service(
            f"http://127.0.0.1:{server.config.port}",
            f"grpc://127.0.0.1:{flight_port}",
            jobs,
            stack,
            tokens,
            market,
        )
    finally:
        server.should_exit = True
        stop.set()
        thread.join(20)
        flight.join(20)
        stack.close()
        jobs.close()


def raw_get(url: str, token: str | None, headers: dict[str, str] | None = None) -> Any:
    """A GET as any HTTP client makes it: (status, headers, body)."""
    import urllib.error
    import urllib.request

    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=sent)  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return exc.code, exc.headers, body
