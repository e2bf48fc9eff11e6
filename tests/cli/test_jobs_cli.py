"""``quarry jobs``, ``quarry tokens`` and ``quarry projects`` in-process against a real API
(uvicorn in a thread over a real store): what a person reads."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner

from quarry.cli import app as cli_app
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
    # it runs a moment before it fails, so that its memory is sampled: an attempt that ends
    # before the worker's first look at it has no peak to show
    fail = "{command: [python3, -c, 'import time; time.sleep(0.5); exit(3)']}"
    run("jobs", "submit", _write(tmp_path, "bad", run=fail))
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


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 (loopback)
        return str(response.read().decode())


def _run_with_stdin(stdin: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli_app, list(args), input=stdin,
                                env={"QUARRY_NO_PROGRESS": "1", "COLUMNS": "200"})  # fmt: skip
    return result.exit_code, result.stdout, result.stderr


def test_project_variables_reach_the_projects_jobs_and_are_never_shown(
    api: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, db = api
    secret = "s3cr3t-alpha-value"  # noqa: S105 (made up: the test is that it is never shown)
    code, out, err = _run_with_stdin(secret + "\n", "projects", "env", "set", "alpha",
                                     "API_KEY=-", "--db", db)  # fmt: skip
    assert (code, out.strip()) == (0, "API_KEY set for project alpha's jobs"), err
    assert run("projects", "env", "set", "beta", "API_KEY=s3cr3t-beta", "--db", db)[0] == 0
    code, out, _ = run("projects", "env", "list", "alpha", "--db", db)
    header, row = out.splitlines()
    assert header.split() == ["NAME", "SET", "BY", "SET", "AT"]
    assert row.split()[0] == "API_KEY" and secret not in out
    code, out, _ = run("projects", "env", "list", "alpha", "--db", db, "--json")
    (listed,) = json.loads(out)
    assert sorted(listed) == ["name", "set_at", "set_by"] and listed["name"] == "API_KEY"
    # a job may not shadow its project's variable: one line naming it, nothing queued
    shadow = _write(tmp_path, "shadow", env="{API_KEY: mine}")
    code, out, err = run("jobs", "submit", shadow)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "env.API_KEY: project 'alpha' sets API_KEY itself" in err
    assert store.counts() == {}
    # the job sees alpha's value (its digest is printed, so that the log holds no secret)
    digest = "import hashlib, os; print(hashlib.sha256(os.environ['API_KEY'].encode()).hexdigest())"
    reads = _write(tmp_path, "reads", run=f"{{command: [python3, -c, {digest!r}]}}")
    code, _, err = run("jobs", "submit", reads)
    assert code == 0, err
    with caplog.at_level(logging.DEBUG):
        _work(store, tmp_path)
    assert run("jobs", "logs", "1")[1].strip() == hashlib.sha256(secret.encode()).hexdigest()
    shown = [run("jobs", "show", "1")[1], run("jobs", "show", "1", "--json")[1],
             run("jobs", "list", "--json")[1],
             _get(os.environ["QUARRY_SERVER"] + "/metrics"), caplog.text]  # fmt: skip
    assert "job 1 attempt 1 succeeded" in caplog.text
    for text in shown:
        assert secret not in text and "s3cr3t-beta" not in text
    code, out, _ = run("projects", "env", "unset", "alpha", "API_KEY", "--db", db)
    assert (code, out.strip()) == (0, "API_KEY removed from project alpha")
    code, out, _ = run("projects", "env", "list", "alpha", "--db", db)
    assert out.strip() == ("project alpha has no variables; set one with quarry projects env "
                           "set alpha NAME=VALUE")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["set", "alpha", "api_key=x"], "", "variable name 'api_key': use capital letters"),
        (["set", "alpha", "API_KEY"], "", "'API_KEY': give NAME=VALUE, or NAME=- to read"),
        (["set", "alpha", "API_KEY=-"], "", "API_KEY=-: nothing came on stdin"),
        (["set", "al/pha", "API_KEY=x"], "", "project 'al/pha': a project's name is letters"),
        (["unset", "alpha", "NOPE"], "", "project alpha has no variable NOPE; see quarry"),
    ],
)
def test_project_variable_mistakes_are_one_line_errors(
    tmp_path: Path, args: list[str], stdin: str, message: str
) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    code, out, err = _run_with_stdin(stdin, "projects", "env", *args, "--db", db)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


def test_a_database_that_cannot_be_opened_and_a_bad_project_are_one_line(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'jobs.db'}"
    code, _, err = run("projects", "env", "list", "alpha", "--db", missing)
    assert code == 1 and err.count("\n") == 1 and "cannot open the job database" in err, err
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    code, out, err = run("tokens", "create", "--user", "ann", "--project", "b c", "--db", db)
    assert code == 1 and out == "" and "project 'b c'" in err and "Traceback" not in err


def test_the_backend_is_also_a_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """QUARRY_BACKEND chooses the backend as --backend does; a bad one is the same one line."""
    monkeypatch.setenv("QUARRY_BACKEND", "kubernetes")
    code, _, err = run("server", "start", "--db", f"sqlite:///{tmp_path / 'jobs.db'}",
                       "--port", "1")  # fmt: skip
    assert code == 1
    assert err.strip() == "error: --backend 'kubernetes': choose local or ray"
