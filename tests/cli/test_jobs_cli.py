"""``quarry jobs`` and ``quarry tokens`` in-process against a real API (uvicorn in a thread over
a real store): what a person reads."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from quarry.jobs import Client, JobStore, Worker
from quarry.jobs._api import create_app
from quarry.jobs._manifest import Resources
from tests.cli.helpers import run


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[JobStore, str]]:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    with JobStore(db) as store:
        app = create_app(store, capacity=Resources(cpus=2, memory="2Gi"), logs=tmp_path / "logs",
                         outputs=tmp_path / "jobs")  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        thread = threading.Thread(target=server.run)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("QUARRY_SERVER", url)
        monkeypatch.setenv("QUARRY_TOKEN", store.create_token("ann", "alpha"))
        try:
            Client(url).wait_until_up(30)
            yield store, db
        finally:
            server.should_exit = True
            thread.join()


def _write(tmp_path: Path, name: str, **lines: str) -> str:
    path = tmp_path / f"{name}.yaml"
    body = {"name": name, "project": "alpha", "resources": "{cpus: 1, memory: 256Mi}",
            "run": "{command: [python3, -c, 'print(1)']}", **lines}  # fmt: skip
    path.write_text("".join(f"{k}: {v}\n" for k, v in body.items()))
    return str(path)


def _work(store: JobStore, tmp_path: Path) -> None:
    Worker(store, tmp_path / "logs", cpus=2, memory=2 << 30).run(until_idle=True, every=0.05)


def test_show_list_and_cancel_read_as_sentences(api: Any, tmp_path: Path) -> None:
    store, _ = api
    code, out, err = run("jobs", "submit", _write(tmp_path, "ok"))
    assert code == 0, err
    assert out.strip() == "job 1 queued: ok (project alpha); see quarry jobs show 1"
    run("jobs", "submit", _write(tmp_path, "bad", run="{command: [python3, -c, 'exit(3)']}"))
    _work(store, tmp_path)
    code, out, _ = run("jobs", "show", "2")
    lines = out.splitlines()
    assert lines[0] == "job 2 bad (project alpha): failed - exit code 3"  # not "failed - failed"
    assert lines[1] == "resources: 1 cpus, 256 MiB memory, 0 gpus"
    assert lines[2] == f"output: {tmp_path / 'jobs' / '2' / 'out'}"
    assert lines[3].startswith("  attempt 1: failed - exit code 3 (limit 256 MiB, peak ")
    code, out, _ = run("jobs", "list")
    assert out.split()[:5] == ["ID", "STATUS", "PROJECT", "NAME", "SUBMITTED"]
    assert out.strip().endswith("jobs 1-2 of 2")
    code, out, err = run("jobs", "cancel", "1")
    assert code == 1 and out == ""
    assert "job 1 already succeeded: nothing was cancelled" in err
    run("jobs", "submit", _write(tmp_path, "later"))
    code, out, _ = run("jobs", "show", "3")
    assert out.splitlines()[1] == "queued: 1st in the queue; next to start"
    code, out, _ = run("jobs", "cancel", "3")
    assert (code, out.strip()) == (0, "job 3 cancelled while queued")


def test_errors_are_the_servers_own_words(api: Any, tmp_path: Path) -> None:
    code, _, err = run("jobs", "list", "--limit", "0")
    assert code == 1 and "None" not in err
    assert "limit: Input should be greater than or equal to 1" in err
    code, _, err = run("jobs", "submit", _write(tmp_path, "big", resources="{memory: 64Gi}"))
    assert code == 1 and "resources.memory 64Gi exceeds the largest worker's 2Gi" in err
    code, _, err = run("jobs", "show", "99")
    assert code == 1 and "404 no job 99 in your projects" in err


def test_tokens_list_and_revoke(api: Any) -> None:
    _, db = api
    code, out, _ = run("tokens", "list", "--db", db)
    header, row = out.splitlines()[:2]
    assert header.split() == ["ID", "USER", "PROJECTS", "CREATED", "LAST", "USED", "REVOKED"]
    assert row.split()[:3] == ["1", "ann", "alpha"] and row.split()[-1] == "-"
    assert os.environ["QUARRY_TOKEN"] not in out  # never the secret
    assert run("jobs", "list")[0] == 0
    code, out, _ = run("tokens", "revoke", "1", "--db", db)
    assert (code, out.strip()) == (0, "token 1 revoked")
    code, _, err = run("jobs", "list")
    assert code == 1 and "401" in err and "QUARRY_TOKEN" in err
    assert run("tokens", "revoke", "1", "--db", db)[0] == 1  # already revoked
