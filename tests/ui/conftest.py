"""The dashboard as a person runs it, for the browser tests: ``quarry server start`` in its own
process over a temporary QUARRY_HOME, a small synthetic market registered as a dataset, a
tracked workflow run that registered a model (so runs, a model and a gate decision exist),
a user's token; and Debian's chromium driven by Playwright (never a downloaded browser).

Made once a session (``make test`` gives each test file a worker, and so a server, of its
own); the tests add jobs and runs to it and record them on ``Dashboard``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml

from tests.workflows.helpers import small_spec

QUARRY = [sys.executable, "-m", "quarry.cli"]
CHROMIUM = Path(os.environ.get("QUARRY_CHROMIUM", "/usr/bin/chromium"))  # make test sets it
USER, PROJECT = "ann", "alpha"
DATASET = "ui_market"
MODEL = "ui-small"
EXPERIMENT = "ui"
STARTUP = 90.0  # seconds the server may take to answer /healthz
WORKFLOW_SECONDS = 240.0  # a tiny workflow, on a busy 2-core machine

# The workflow tests' small workflow (tests/workflows/helpers.py): three cheap features, 30
# boosting rounds; the first run reads MOM20 alone, the second MOM20 and the planted
# reversal, so the gate promotes the second over the first on a real comparison.
FEATURES = {
    "set": "none",
    "extra": {
        "NOISE": "$volume / Mean($volume, 5)",
        "REV5": "-($close / Ref($close, 5) - 1)",
        "MOM20": "$close / Ref($close, 20) - 1",
    },
}
FIRST_COLUMNS = ["MOM20"]
SECOND_COLUMNS = ["MOM20", "REV5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TrackedRun:
    """A workflow run: its MLflow run id, its output folder and its results.json."""

    run_id: str
    out: Path
    results: dict[str, Any]

    @classmethod
    def read(cls, out: Path) -> TrackedRun:
        results = json.loads((out / "results.json").read_text())
        return cls(results["mlflow_run_id"], out, results)


@dataclass
class Dashboard:
    """The running server and what it holds: ``runs`` in the order they were made (the
    first is still running when the fixture hands the dashboard over: ``runs`` waits for
    it), ``jobs`` the tests submitted."""

    root: Path
    port: int
    env: dict[str, str]
    db: str
    store: Path
    token: str = ""
    jobs: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    first: subprocess.Popen[bytes] | None = None
    _runs: list[TrackedRun] = field(default_factory=list)

    @property
    def runs(self) -> list[TrackedRun]:
        if self.first is not None:
            code = self.first.wait(timeout=WORKFLOW_SECONDS)
            output = (self.root / "first-run.log").read_text(errors="replace")
            assert code == 0, f"the first workflow run failed:\n{output[-3000:]}"
            self.first = None
            self._runs.insert(0, TrackedRun.read(self.root / "first-run"))
        return self._runs

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def home(self) -> Path:
        return Path(self.env["QUARRY_HOME"])

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def cli(self, *args: str) -> Any:
        """``quarry ARGS --json`` against this server's home and database."""
        done = subprocess.run([*QUARRY, *args, "--json"], env=self.env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, f"quarry {' '.join(args)}: {done.stderr[-3000:]}"
        return json.loads(done.stdout)

    def api(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        """The job API with this user's token."""
        headers = {"Authorization": f"Bearer {self.token}"}
        return httpx2.request(method, self.url + path, headers=headers, timeout=30, **kwargs)

    def workflow(self, name: str, columns: list[str]) -> Path:
        """A small workflow over the market that registers ``MODEL`` through the gate."""
        spec = small_spec(
            self.store, name=name, features=FEATURES,
            model={"columns": columns},
            tracking={"experiment": EXPERIMENT, "register": MODEL, "project": PROJECT,
                      "description": "The dashboard tests' small model."},
        )  # fmt: skip
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path

    def workflow_manifest(self, name: str = "ui-workflow") -> str:
        """The job manifest (YAML) of the second workflow, as a person types it."""
        workflow = self.workflow("second", SECOND_COLUMNS)
        return (f"name: {name}\nproject: {PROJECT}\nrun:\n  workflow: {workflow}\n"
                "resources: {cpus: 1, memory: 4Gi}\n")  # fmt: skip

    def wait_job(self, job_id: int, statuses: tuple[str, ...], seconds: float) -> dict[str, Any]:
        """The job from the API once its status is one of ``statuses``."""
        deadline = time.monotonic() + seconds
        while True:
            job: dict[str, Any] = self.api("GET", f"/v1/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            assert job["status"] in ("queued", "running"), (job, self.server_log())
            assert time.monotonic() < deadline, (job, self.server_log())
            time.sleep(0.5)

    def wait_attempt(self, job_id: int, seconds: float = 30.0) -> dict[str, Any]:
        """The job from the API once its latest attempt has an outcome (its worker saw it
        end: a cancelled attempt's process is stopped a moment after the job is)."""
        deadline = time.monotonic() + seconds
        while True:
            job: dict[str, Any] = self.api("GET", f"/v1/jobs/{job_id}").json()
            if job["attempts"] and job["attempts"][-1]["outcome"] != "running":  # the API's word
                return job
            assert time.monotonic() < deadline, (job, self.server_log())
            time.sleep(0.25)

    def record_job_run(self, job_id: int) -> TrackedRun:
        """The run a finished workflow job made, recorded as the newest."""
        job = self.api("GET", f"/v1/jobs/{job_id}").json()
        run = TrackedRun.read(Path(job["output"]))
        if run.run_id not in {r.run_id for r in self.runs}:
            self.runs.append(run)
        return run

    def two_runs(self) -> tuple[TrackedRun, TrackedRun]:
        """The first two runs; when the browser tests made no second one (this file runs
        alone), the second workflow runs as a job submitted through the API."""
        if len(self.runs) < 2:
            manifest = yaml.safe_load(self.workflow_manifest("ui-workflow-api"))
            answer = self.api("POST", "/v1/jobs", json=manifest)
            assert answer.status_code == 201, answer.text
            job_id = answer.json()["id"]
            self.jobs.append(job_id)
            job = self.wait_job(job_id, ("succeeded",), WORKFLOW_SECONDS)
            assert job["status"] == "succeeded", job
            self.record_job_run(job_id)
        return self.runs[0], self.runs[1]


def _wait_up(dash: Dashboard) -> None:
    assert dash.process is not None
    deadline = time.monotonic() + STARTUP
    while True:
        assert dash.process.poll() is None, f"the server exited:\n{dash.server_log()}"
        try:
            if httpx2.get(f"{dash.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        assert time.monotonic() < deadline, f"no /healthz in {STARTUP:.0f} s:\n{dash.server_log()}"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def browser_path() -> Path:
    """Debian's chromium. Missing, it skips the test, unless QUARRY_REQUIRE_BROWSER is set
    (CI, whose set-up installs it), where it fails. Asked for first, before a server starts."""
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("QUARRY_REQUIRE_BROWSER"):
            pytest.fail(f"{why}, and QUARRY_REQUIRE_BROWSER is set")
        pytest.skip(f"{why}; set QUARRY_REQUIRE_BROWSER=1 to fail instead")
    return CHROMIUM


@pytest.fixture(scope="session")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """``quarry server start`` over a fresh home with a market registered as a dataset, a
    token, and a tracked workflow run that registers a model (still running when this
    returns: ``Dashboard.runs`` waits for it); stopped with SIGTERM, which must end it
    cleanly."""
    from quarry.data import Store, generate

    root = tmp_path_factory.mktemp("dashboard")
    store = root / "store"
    env = {**os.environ, "QUARRY_HOME": str(root / "home"), "QUARRY_STORE": str(store),
           "OMP_WAIT_POLICY": "PASSIVE"}  # fmt: skip
    env.pop("QUARRY_TOKEN", None)
    env.pop("QUARRY_DB", None)
    dash = Dashboard(root, free_port(), env, f"sqlite:///{root / 'jobs.db'}", store)
    # 60 instruments x 300 days with a strong planted reversal (the workflow tests' market)
    generate(Store(store), 60, 300, seed=5, alpha_ic=0.15)
    # the first run goes on while the rest is set up and the browser starts (the server
    # reads MLflow only when a page asks)
    with open(root / "first-run.log", "wb") as out:
        dash.first = subprocess.Popen(
            [*QUARRY, "run", str(dash.workflow("first", FIRST_COLUMNS)), "--out",
             str(root / "first-run")],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        dash.token = dash.cli("tokens", "create", "--user", USER, "--project", PROJECT,
                              "--db", dash.db)["token"]  # fmt: skip
        dash.cli("datasets", "add", DATASET, "--store", str(store), "--owner", USER,
                 "--project", PROJECT, "--description", "The dashboard tests' synthetic "
                 "market.", "--db", dash.db)  # fmt: skip
        with open(dash.log, "wb") as out:
            dash.process = subprocess.Popen(
                [*QUARRY, "server", "start", "--host", "127.0.0.1", "--port", str(dash.port),
                 "--db", dash.db, "--stale-after", "10", "--cpus", "2", "--memory", "8Gi"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_up(dash)
        yield dash
    finally:
        if dash.first is not None and dash.first.poll() is None:
            dash.first.kill()
            dash.first.wait()
        if dash.process is not None:
            _stop(dash)


def _stop(dash: Dashboard) -> None:
    assert dash.process is not None
    dash.process.send_signal(signal.SIGTERM)
    try:
        code = dash.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        dash.process.kill()
        dash.process.wait()
        pytest.fail(f"the server did not stop within 60 s of SIGTERM:\n{dash.server_log()}")
    assert code == 0, f"the server exited {code} after SIGTERM:\n{dash.server_log()}"
    assert "server stopped by SIGTERM" in dash.log.read_text(), dash.server_log()


@pytest.fixture(scope="session")
def chromium(browser_path: Path) -> Iterator[Any]:
    """Debian's headless chromium through Playwright, by its path (Playwright's own
    browsers are never downloaded)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=30_000)  # a page's script answers within seconds, not 5 s
    with sync_playwright() as p:
        # --no-sandbox: chromium's own sandbox cannot start as root (containers, CI)
        browser = p.chromium.launch(executable_path=str(browser_path), args=["--no-sandbox"])
        yield browser
        browser.close()


def sign_in(browser: Any, dash: Dashboard) -> Any:
    """A new browser context signed in through the login form."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.goto(f"{dash.url}/login")
    page.fill("#token", dash.token)
    with page.expect_navigation():
        page.click("form[action='/login'] button[type=submit]")
    assert page.url == f"{dash.url}/", page.url
    page.close()
    return context
