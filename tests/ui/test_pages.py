"""The dashboard's pages over a real job store and tracking store, through the app's own
HTTP interface (the browser tests drive the same pages in Chromium)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from quarry.jobs import JobStore
from quarry.jobs._api import create_app
from quarry.jobs._manifest import Resources
from quarry.jobs._worker import Worker
from quarry.ui import add_dashboard
from quarry.ui._render import CSP

ORIGIN = {"Origin": "http://testserver"}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[TestClient, JobStore, dict[str, str], Path]]:
    with JobStore(f"sqlite:///{tmp_path / 'jobs.db'}") as store:
        app = create_app(store, capacity=Resources(cpus=4, memory="8Gi"), logs=tmp_path / "logs",
                         outputs=tmp_path / "jobs")  # fmt: skip
        add_dashboard(app)
        tokens = {name: store.create_token(name, project)
                  for name, project in (("ann", "alpha"), ("bob", "beta"))}  # fmt: skip
        with TestClient(app, follow_redirects=False) as client:
            yield client, store, tokens, tmp_path


def _login(client: TestClient, token: str) -> None:
    r = client.post("/login", data={"token": token, "next": "/"}, headers=ORIGIN)
    assert r.status_code == 303, r.text


def _manifest(
    name: str = "hello", project: str = "alpha", code: str = "print('hi')"
) -> dict[str, Any]:
    return {"name": name, "project": project, "resources": {"cpus": 1, "memory": "256Mi"},
            "run": {"command": ["python3", "-c", code]}}  # fmt: skip


def _cells(html: str, table_id: str) -> list[list[str]]:
    """The text of each body row's cells of the table ``table_id``."""
    body = html.split(f'id="{table_id}"', 1)[1].split("<tbody", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [[unescape(re.sub(r"<[^>]+>", "", c)).strip()
             for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]  # fmt: skip


# -- signing in -------------------------------------------------------------------------------


def test_a_page_without_a_session_goes_to_the_login_and_back(site: Any) -> None:
    client, _, tokens, _ = site
    r = client.get("/jobs?status=queued")
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Fjobs%3Fstatus%3Dqueued"
    wrong = client.post("/login", data={"token": "qt_nope", "next": "/jobs"}, headers=ORIGIN)
    assert wrong.status_code == 401 and "unknown, revoked" in wrong.text
    assert "set-cookie" not in wrong.headers
    r = client.post("/login", data={"token": tokens["ann"], "next": "/jobs?status=queued"},
                    headers=ORIGIN)  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/jobs?status=queued"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert client.get("/jobs?status=queued").status_code == 200
    out = client.post("/logout", headers=ORIGIN)
    assert out.status_code == 303
    assert client.get("/jobs").status_code == 303  # the cookie is gone


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil", ""])
def test_login_goes_back_only_to_this_server(site: Any, target: str) -> None:
    client, _, tokens, _ = site
    r = client.post("/login", data={"token": tokens["ann"], "next": target}, headers=ORIGIN)
    assert r.headers["location"] == "/"


def test_forms_from_another_site_are_refused(site: Any) -> None:
    client, store, tokens, _ = site
    r = client.post("/login", data={"token": tokens["ann"]},
                    headers={"Origin": "http://evil.example"})  # fmt: skip
    assert r.status_code == 403 and "set-cookie" not in r.headers
    _login(client, tokens["ann"])
    job_id = store.submit(_manifest(), owner="ann")
    for headers in ({"Origin": "http://evil.example"}, {}):
        r = client.post(f"/jobs/{job_id}/cancel", headers=headers)
        assert r.status_code == 403, headers
    assert store.job(job_id).status == "queued"


# -- jobs ----------------------------------------------------------------------------------------


def test_the_jobs_table_is_paged_filtered_and_shows_only_the_viewers_projects(site: Any) -> None:
    client, store, tokens, _ = site
    ids = [store.submit(_manifest(name=f"j{k}"), owner="ann") for k in range(120)]
    theirs = store.submit(_manifest(name="secret", project="beta"), owner="bob")
    for job_id in ids[:7]:
        store.cancel(job_id)
    _login(client, tokens["ann"])
    first = client.get("/jobs").text
    rows = _cells(first, "jobs")
    assert [int(r[0]) for r in rows] == sorted(ids, reverse=True)[:50]
    assert "page 1 of 3 (120 in all)" in first and "secret" not in first
    third = _cells(client.get("/jobs?page=3").text, "jobs")
    assert [int(r[0]) for r in third] == sorted(ids, reverse=True)[100:]
    cancelled = client.get("/jobs?status=cancelled&project=alpha").text
    assert [int(r[0]) for r in _cells(cancelled, "jobs")] == sorted(ids[:7], reverse=True)
    assert all(r[4] == "cancelled" for r in _cells(cancelled, "jobs"))
    # the rows the script swaps in are the same rows
    assert _cells("<table id=\"x\"><tbody>" + client.get("/jobs/rows?page=3").text +
                  "</tbody></table>", "x") == third  # fmt: skip
    for url in (f"/jobs/{theirs}", "/jobs?project=beta"):
        r = client.get(url)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    nothing = client.get("/jobs?status=failed").text
    assert "No jobs match these filters" in nothing
    assert client.get("/jobs?status=bogus").status_code == 422


def test_submitting_a_manifest_from_the_form(site: Any) -> None:
    client, store, tokens, _ = site
    _login(client, tokens["ann"])
    assert "project: alpha" in client.get("/jobs/new").text  # the example names their project
    text = "name: from-form\nproject: alpha\nrun:\n  command: [python3, -c, 'print(1)']\n"
    r = client.post("/jobs/new", data={"manifest": text}, headers=ORIGIN)
    assert r.status_code == 303
    job = store.job(int(r.headers["location"].rsplit("/", 1)[1]))
    assert (job.name, job.owner, job.status) == ("from-form", "ann", "queued")
    bad = client.post("/jobs/new", data={"manifest": text + "cpu: 2\n"}, headers=ORIGIN)
    assert bad.status_code == 422 and "cpu" in bad.text and "line 5" in bad.text
    assert "from-form" in bad.text  # the text is kept for mending
    big = text + "resources: {cpus: 64, memory: 1Gi}\n"
    r = client.post("/jobs/new", data={"manifest": big}, headers=ORIGIN)
    assert r.status_code == 422 and "64" in r.text
    other = text.replace("project: alpha", "project: beta")
    r = client.post("/jobs/new", data={"manifest": other}, headers=ORIGIN)
    assert r.status_code == 403 and "not a member" in r.text
    assert store.jobs()[1] == 1  # only the good one was queued


def test_a_job_page_shows_its_attempts_its_log_and_cancels(site: Any) -> None:
    client, store, tokens, tmp_path = site
    _login(client, tokens["ann"])
    code = "import sys; print('out line'); sys.exit(3)"
    retries = {"max": 1, "backoff": 0, "on": ["failed"]}
    job_id = store.submit({**_manifest(code=code), "retries": retries}, owner="ann")
    Worker(store, tmp_path / "logs", cpus=2, memory=2 << 30,
           outputs=tmp_path / "jobs").run(until_idle=True, every=0.05)  # fmt: skip
    page = client.get(f"/jobs/{job_id}").text
    attempts = _cells(page, "attempts")
    assert [(a[0], a[1], a[3]) for a in attempts] == [("1", "failed", "3"), ("2", "failed", "3")]
    assert 'data-status="failed"' in page and "Cancel</button>" not in page
    log = client.get(f"/jobs/{job_id}/log?offset=0&attempt=0")
    assert log.text == "out line\n" and log.headers["x-attempt"] == "2"
    assert log.headers["x-offset"] == str(len(b"out line\n"))
    assert log.headers["x-status"] == "failed"
    rest = client.get(f"/jobs/{job_id}/log?offset=4&attempt=2")
    assert rest.text == "line\n"  # from where the script had read
    restart = client.get(f"/jobs/{job_id}/log?offset=4&attempt=1")
    assert restart.text == "out line\n"  # another attempt: from its start
    running = store.submit(_manifest(name="waits"), owner="ann")
    assert "Cancel</button>" in client.get(f"/jobs/{running}").text
    summary = client.get(f"/jobs/{running}/summary").text
    assert 'data-status="queued"' in summary and "next to start" in summary
    r = client.post(f"/jobs/{running}/cancel", headers=ORIGIN)
    assert r.status_code == 303 and store.job(running).status == "cancelled"
    again = client.post(f"/jobs/{running}/cancel", headers=ORIGIN)
    assert again.status_code == 409 and "already cancelled" in again.text


def test_a_workflow_jobs_page_links_its_run(site: Any) -> None:
    client, store, tokens, tmp_path = site
    _login(client, tokens["ann"])
    job_id = store.submit(_manifest(), owner="ann")
    Worker(store, tmp_path / "logs", cpus=2, memory=2 << 30,
           outputs=tmp_path / "jobs").run(until_idle=True, every=0.05)  # fmt: skip
    out = tmp_path / "jobs" / str(job_id) / "out"
    results = {"ic": 0.0312, "rank_ic": 0.0401, "sharpe": 1.25, "excess_annualized_return": 0.081,
               "max_drawdown": -0.12, "mlflow_run_id": "a" * 32, "model_version": 3,
               "promoted": True}  # fmt: skip
    (out / "results.json").write_text(json.dumps(results))
    page = client.get(f"/jobs/{job_id}").text
    assert f'href="/runs/{"a" * 32}"' in page
    assert "IC 0.0312, Rank IC 0.0401, Sharpe 1.25" in page
    assert "excess return 8.10%, max drawdown -12.00%, model version 3 (promoted)" in page


# -- runs -----------------------------------------------------------------------------------------


def _returns(path: Path, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    days = pl.date_range(datetime(2020, 1, 1), datetime(2021, 12, 31), "1d", eager=True)
    frame = pl.DataFrame({"date": days, "return_net": rng.normal(0.0005, 0.01, len(days)),
                          "return_gross": rng.normal(0.0005, 0.01, len(days)),
                          "benchmark": rng.normal(0.0002, 0.01, len(days))})  # fmt: skip
    frame.write_parquet(path)
    return frame


def _series(svg: str, name: str) -> tuple[list[str], np.ndarray]:
    data = re.search(rf'data-name="{re.escape(name)}" data-series="([^"]*)"', svg)
    assert data is not None, name
    pairs = [p.split(",") for p in data.group(1).split(";")]
    return [d for d, _ in pairs], np.array([float(v) for _, v in pairs])


@pytest.fixture
def tracked(tmp_path: Path) -> dict[str, Any]:
    """Three tracked runs: two with a backtest's returns and report, one without."""
    import mlflow

    from quarry.tracking import client, experiment_id

    mlflow_client = client()
    runs: dict[str, Any] = {}
    for k, (name, ic, sharpe) in enumerate((("first", 0.02, 0.8), ("second", 0.035, 1.4),
                                           ("bare", 0.01, None))):  # fmt: skip
        run = mlflow_client.create_run(experiment_id("research"), run_name=name,
                                       start_time=1_700_000_000_000 + k * 1000)  # fmt: skip
        metrics = {"test_ic": ic, "test_rank_ic": ic * 1.5, "valid_ic": ic / 2}
        if sharpe is not None:
            metrics |= {"backtest_sharpe": sharpe, "backtest_max_drawdown": -0.1 * (k + 1),
                        "backtest_excess_annualized_return": 0.05 * (k + 1)}  # fmt: skip
            folder = tmp_path / f"bt-{name}"
            folder.mkdir()
            returns = _returns(folder / "returns.parquet", seed=k)
            (folder / "report.html").write_text(f"<html><title>report {name}</title></html>")
            with mlflow.start_run(run_id=run.info.run_id):
                for file in ("returns.parquet", "report.html"):
                    mlflow.log_artifact(str(folder / file), artifact_path="backtest")
            runs[f"{name}_returns"] = returns
        for key, value in metrics.items():
            mlflow_client.log_metric(run.info.run_id, key, value)
        mlflow_client.set_terminated(run.info.run_id)
        runs[name] = run.info.run_id
    return runs


def test_the_runs_table_shows_each_runs_figures_newest_first(site: Any, tracked: Any) -> None:
    client, _, tokens, _ = site
    _login(client, tokens["ann"])
    rows = _cells(client.get("/runs").text, "runs")
    assert [r[1] for r in rows] == ["bare", "second", "first"]
    second = rows[1]
    # IC, Rank IC, Sharpe, excess return, max drawdown
    assert second[5:10] == ["0.035", "0.0525", "1.4", "10.00%", "-20.00%"]
    assert rows[0][5:10] == ["0.01", "0.015", "-", "-", "-"]
    empty = client.get("/runs?experiment=nope")
    assert empty.status_code == 404 and "research" in empty.text


def test_runs_come_a_page_at_a_time(site: Any, tracked: Any, monkeypatch: Any) -> None:
    from quarry.ui import _runs

    monkeypatch.setattr(_runs, "PER_PAGE", 2)
    client, _, tokens, _ = site
    _login(client, tokens["ann"])
    first = client.get("/runs").text
    assert [r[1] for r in _cells(first, "runs")] == ["bare", "second"]
    after = re.search(r'rel="next" href="\?after=([^"]+)"', first)
    assert after is not None
    second = client.get(f"/runs?after={after.group(1)}").text
    assert [r[1] for r in _cells(second, "runs")] == ["first"]
    assert 'rel="next"' not in second and "first page" in second
    bad = client.get("/runs?after=garbage")
    assert bad.status_code == 422 and "start again from the first page" in bad.text


def test_a_run_page_draws_the_equity_curve_from_its_returns(site: Any, tracked: Any) -> None:
    client, _, tokens, _ = site
    _login(client, tokens["ann"])
    page = client.get(f"/runs/{tracked['second']}").text
    returns = tracked["second_returns"].to_pandas()
    dates, values = _series(page, "strategy (net)")
    np.testing.assert_allclose(values, (1 + returns["return_net"]).cumprod() - 1, rtol=1e-12)
    assert dates[0] == "2020-01-01" and dates[-1] == "2021-12-31"
    _, bench = _series(page, "benchmark")
    np.testing.assert_allclose(bench, (1 + returns["benchmark"]).cumprod() - 1, rtol=1e-12)
    wealth = (1 + returns["return_net"]).cumprod()
    _, drawdown = _series(page, "drawdown")
    np.testing.assert_allclose(drawdown, wealth / wealth.cummax() - 1, rtol=1e-9, atol=1e-15)
    figures = dict((r[0], r[1]) for r in _cells(page, "figures"))
    assert figures["IC"] == "0.035" and figures["valid_ic"] == "0.0175"
    assert f'src="/runs/{tracked["second"]}/report"' in page
    bare = client.get(f"/runs/{tracked['bare']}").text
    assert "has no backtest report" in bare and "<svg" not in bare


def test_the_report_is_framed_under_a_sandbox(site: Any, tracked: Any) -> None:
    client, _, tokens, _ = site
    _login(client, tokens["ann"])
    r = client.get(f"/runs/{tracked['first']}/report")
    assert r.status_code == 200 and "report first" in r.text
    policy = r.headers["content-security-policy"]
    assert policy.startswith("sandbox allow-scripts;") and "allow-same-origin" not in policy
    assert "default-src 'none'" in policy and "http" not in policy
    assert client.get(f"/runs/{tracked['bare']}/report").status_code == 404


def test_two_runs_side_by_side(site: Any, tracked: Any) -> None:
    client, _, tokens, _ = site
    _login(client, tokens["ann"])
    a, b = tracked["first"], tracked["second"]
    page = client.get(f"/runs/compare?run={a}&run={b}").text
    rows = {r[0]: r[1:] for r in _cells(page, "comparison")}
    assert rows["IC"] == ["0.02", "0.035", "0.015"]
    assert rows["Sharpe"] == ["0.8", "1.4", "0.6"]
    assert rows["Excess return"] == ["5.00%", "10.00%", "5.00%"]
    for name in ("first", "second"):
        _, values = _series(page, f"{name} (net)")
        returns = tracked[f"{name}_returns"]["return_net"].to_numpy()
        np.testing.assert_allclose(values, np.cumprod(1 + returns) - 1, rtol=1e-12)
    assert page.count('class="report"') == 2
    for bad in (f"run={a}", f"run={a}&run={a}", f"run={a}&run=nope"):
        assert client.get(f"/runs/compare?{bad}").status_code in (404, 422), bad


# -- models --------------------------------------------------------------------------------------


def test_a_models_versions_gate_decisions_and_alias_history(site: Any, tracked: Any) -> None:
    import mlflow

    from quarry.tracking import client, move_alias

    registry = client()
    registry.create_registered_model("alpha-model", tags={"quarry.project": "alpha"})
    registry.create_registered_model("beta-model", tags={"quarry.project": "beta"})
    for run_id in (tracked["first"], tracked["second"]):
        registry.create_model_version("alpha-model", f"runs:/{run_id}/model", run_id=run_id)
    with mlflow.start_run(run_id=tracked["second"]):
        reason = "beat the champion (version 1) on every rule"
        mlflow.set_tags({"quarry.gate.promoted": "true", "quarry.gate.reason": reason})
        mlflow.log_metrics({"gate_challenger_sharpe": 1.7, "gate_champion_sharpe": 0.9,
                            "gate_challenger_ic": 0.04, "gate_champion_ic": 0.03})  # fmt: skip
    move_alias("alpha-model", "champion", 1, expected=None, by="ann", reason="first one")
    move_alias("alpha-model", "champion", 2, expected=1, by="gate", reason="beat it")
    client_, _, tokens, _ = site
    _login(client_, tokens["ann"])
    listing = client_.get("/models").text
    models = _cells(listing, "models")
    assert [m[0] for m in models] == ["alpha-model"]  # beta's model is not theirs
    assert models[0][4] == "champion → v2"
    assert "does not serve models" in listing
    page = client_.get("/models/alpha-model").text
    assert [v[0] for v in _cells(page, "versions")] == ["v2", "v1"]
    decision = page.split('class="decision" data-version="2"', 1)[1].split("</section>", 1)[0]
    assert "promoted" in decision and "beat the champion (version 1) on every rule" in decision
    figures = {r[0]: r[1:] for r in _cells(decision.replace("<table", '<table id="d"', 1), "d")}
    assert figures == {"IC": ["0.04", "0.03"], "Sharpe": ["1.7", "0.9"]}
    history = _cells(page, "history")
    assert [(h[1], h[2], h[3], h[4], h[6]) for h in history] == [
        ("champion", "v1", "v2", "gate", "beat it"),
        ("champion", "-", "v1", "ann", "first one"),
    ]
    assert client_.get("/models/beta-model").status_code == 404
    assert client_.get("/models/none-such").status_code == 404


# -- datasets and streams ------------------------------------------------------------------------


def test_datasets_their_commits_coverage_and_health(site: Any, tmp_path: Path) -> None:
    from quarry.data import Store, check_health
    from quarry.data._synthetic import generate

    client, store, tokens, _ = site
    location = tmp_path / "market"
    generate(Store(location), instruments=12, days=60, seed=3)
    store.add_dataset("market", str(location), owner="ann", project="alpha", visibility="project")
    store.add_dataset("hidden", str(location), owner="bob", project="beta", visibility="private")
    _login(client, tokens["ann"])
    listed = _cells(client.get("/datasets").text, "datasets")
    assert [d[0] for d in listed] == ["market"]
    page = client.get("/datasets/market").text
    commits = Store(location).commits()
    assert len(_cells(page, "commits")) == len(commits)
    assert 'data-load="/datasets/market/coverage"' in page
    cover = client.get("/datasets/market/coverage").text
    bars = Store(location).scan("bars").collect()
    daily = (bars.group_by(pl.col("date").cast(pl.Date))
             .agg(pl.col("instrument").n_unique()).sort("date"))  # fmt: skip
    dates, counts = _series(cover, "instruments")
    assert dates == [str(d) for d in daily["date"]]
    np.testing.assert_array_equal(counts, daily["instrument"].to_numpy())
    assert f"{bars['instrument'].n_unique()} instruments" in cover
    health = client.get("/datasets/market/health").text
    report = check_health(Store(location))
    shown = {r[0]: int(r[2]) for r in _cells(health, "health-checks")}
    assert shown == {c.name: c.count for c in report.checks}
    assert client.get("/datasets/hidden").status_code == 404


def test_live_streams_are_the_ones_writing_their_status(site: Any) -> None:
    from quarry.settings import streams_dir

    client, _, tokens, _ = site
    _login(client, tokens["ann"])
    folder = streams_dir()
    folder.mkdir(parents=True)
    now = datetime.now(UTC)
    base = {"bars": 1234, "bars_per_second": 2.5, "lag_p50_ms": 41.0, "lag_p99_ms": 90.0,
            "model": "alpha", "model_version": 7, "dead_letters": 0,
            "last_bar": now.isoformat()}  # fmt: skip
    for name, age, stopped in (("live", 1, False), ("old", 60, False), ("done", 1, True)):
        status = base | {"name": name, "updated_at": (now - timedelta(seconds=age)).isoformat(),
                         "stopped": stopped}  # fmt: skip
        (folder / f"{name}.json").write_text(json.dumps(status))
    (folder / "broken.json").write_text("{not json")
    rows = _cells(client.get("/streams").text, "streams")
    assert [(r[0], r[2], r[3], r[4], r[6]) for r in rows] == [
        ("live", "1,234", "2.5", "41 ms", "alpha v7")
    ]


def test_a_stream_writes_its_status_for_the_dashboard() -> None:
    from quarry.settings import streams_dir
    from quarry.stream._runner import Health, _StatusFile

    status = _StatusFile("s1")
    health = Health(bars=3, model="m", model_version=2)
    status.write(health)
    written = json.loads((streams_dir() / "s1.json").read_text())
    assert (written["bars"], written["model_version"], written["stopped"]) == (3, 2, False)
    health.bars = 4
    status.write(health)  # within the second: not written again
    assert json.loads((streams_dir() / "s1.json").read_text())["bars"] == 3
    status.write(health, stopped=True)
    final = json.loads((streams_dir() / "s1.json").read_text())
    assert (final["bars"], final["stopped"]) == (4, True)


# -- every page ----------------------------------------------------------------------------------


def test_every_page_runs_no_inline_script_or_style(site: Any, tracked: Any, tmp_path: Path) -> None:
    client, store, tokens, _ = site
    job_id = store.submit(_manifest(), owner="ann")
    _login(client, tokens["ann"])
    urls = ["/", "/jobs", "/jobs/new", f"/jobs/{job_id}", "/runs", f"/runs/{tracked['first']}",
            f"/runs/compare?run={tracked['first']}&run={tracked['second']}", "/models",
            "/datasets", "/jobs/99999", "/login"]  # fmt: skip
    for url in urls:
        r = client.get(url)
        assert r.headers["content-security-policy"] == CSP, url
        assert "'unsafe-inline'" not in CSP and "default-src 'self'" in CSP
        html = r.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), url
        assert not re.search(r"\sstyle=|<style", html), url
        assert not re.search(r"\son[a-z]+=", html), url


def test_a_failing_page_says_so_in_one_line(site: Any, monkeypatch: Any) -> None:
    from quarry.exceptions import DataError
    from quarry.ui import _models

    client, _, tokens, _ = site
    _login(client, tokens["ann"])

    def broken() -> None:
        raise RuntimeError("the registry is away")

    monkeypatch.setattr(_models, "list_models", broken)
    r = client.get("/models")
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    assert "this page failed (RuntimeError: the registry is away)" in r.text
    assert "Traceback" not in r.text

    def refused() -> None:
        raise DataError("store ./x: not a store")

    monkeypatch.setattr(_models, "list_models", refused)
    r = client.get("/models")
    assert r.status_code == 422 and "store ./x: not a store" in r.text
