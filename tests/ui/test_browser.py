"""The dashboard end to end in headless chromium, against ``quarry server start`` in its own
process (tests/ui/conftest.py): sign in, submit a workflow job from the form, watch its page
follow it to the end, open its run, compare it with another, see the charts and the reports;
cancel a job; the models' and datasets' pages.

Every figure and curve a page shows is checked against the job's own files (results.json,
returns.parquet) or the store, computed here with pandas; every page is screenshotted under
the test's temporary folder (printed), and any console error (a CSP violation is one) or
uncaught script error on any page fails the test.
"""

from __future__ import annotations

import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest

from tests.ui.conftest import (
    DATASET,
    MODEL,
    PROJECT,
    USER,
    WORKFLOW_SECONDS,
    Dashboard,
    TrackedRun,
    sign_in,
)

# browser_path first: without chromium the test skips before a server starts
pytestmark = [pytest.mark.slow, pytest.mark.service, pytest.mark.usefixtures("browser_path")]

# MLflow's metric -> the key of the same figure in the workflow's results.json
RESULT_KEYS = {
    "test_ic": "ic",
    "test_rank_ic": "rank_ic",
    "test_icir": "icir",
    "test_rank_icir": "rank_icir",
    "backtest_sharpe": "sharpe",
    "backtest_excess_annualized_return": "excess_annualized_return",
    "backtest_max_drawdown": "max_drawdown",
    "backtest_annualized_return": "annualized_return",
    "backtest_information_ratio": "information_ratio",
    "backtest_turnover": "turnover",
}
HEADLINE = ("test_ic", "test_rank_ic", "backtest_sharpe", "backtest_excess_annualized_return",
            "backtest_max_drawdown")  # fmt: skip
SLEEPER = "import time; print('sleeping', flush=True); time.sleep(60)"


# -- what a figure should read, worked out here ----------------------------------------------


def as_pct(value: float) -> str:
    """Percent with two decimals, e.g. -0.052917 -> '-5.29%'."""
    return f"{value * 100:.2f}%"


def as_num(value: float) -> str:
    """Four significant digits without trailing zeros (thousands separated from 10,000)."""
    if abs(value) >= 1e4:
        return f"{round(value):,}"
    return np.format_float_positional(value, precision=4, unique=False, fractional=False,
                                      trim="-")  # fmt: skip


def how(key: str) -> str:
    return "pct" if "return" in key or "drawdown" in key else "num"


def shown(key: str, value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return as_pct(value) if how(key) == "pct" else as_num(value)


def expected_figures(results: dict[str, Any]) -> dict[str, str]:
    """MLflow key -> the text its row should show, from results.json alone."""
    out = {key: shown(key, results[name]) for key, name in RESULT_KEYS.items()}
    for name, value in results["backtest_gross"].items():
        out[f"backtest_gross_{name}"] = shown(name, value)
    return out


def curves(out: Path) -> dict[str, Any]:
    """The backtest day by day from the run's returns.parquet, with pandas."""
    r = pd.read_parquet(out / "returns.parquet").sort_values("date")
    wealth = (1.0 + r["return_net"].fillna(0.0)).cumprod()
    return {
        "dates": list(pd.to_datetime(r["date"]).dt.strftime("%Y-%m-%d")),
        "net": (wealth - 1.0).to_numpy(),
        "benchmark": ((1.0 + r["benchmark"].fillna(0.0)).cumprod() - 1.0).to_numpy(),
        "drawdown": (wealth / wealth.cummax() - 1.0).to_numpy(),
    }


def parse_series(text: str) -> tuple[list[str], np.ndarray]:
    pairs = [p.split(",") for p in text.split(";")]
    return [d for d, _ in pairs], np.array([float(v) for _, v in pairs])


def assert_line(line: tuple[list[str], np.ndarray], dates: list[str], values: Any) -> None:
    assert line[0] == dates
    np.testing.assert_allclose(line[1], values, rtol=1e-12, atol=1e-15)


# -- the browser -----------------------------------------------------------------------------


class Watch:
    """Pages opened with their console errors and uncaught exceptions recorded, and each
    step screenshotted (full page) under ``folder``."""

    def __init__(self, context: Any, folder: Path) -> None:
        self.context = context
        self.folder = folder
        self.problems: list[str] = []
        self.shots = 0
        folder.mkdir(parents=True, exist_ok=True)
        print(f"screenshots in {folder}", file=sys.stderr)

    def page(self) -> Any:
        page = self.context.new_page()

        def console(message: Any) -> None:
            if message.type == "error":
                self.problems.append(f"{page.url}: console error: {message.text}")

        page.on("console", console)
        page.on("pageerror", lambda exc: self.problems.append(f"{page.url}: {exc}"))
        return page

    def shoot(self, page: Any, name: str) -> None:
        self.shots += 1
        page.screenshot(path=self.folder / f"{self.shots:02d}-{name}.png", full_page=True)

    def shoot_frame(self, page: Any, selector: str, name: str) -> None:
        """A frame scrolled into view (a full-page shot leaves a sandboxed frame below the
        fold blank: it is drawn by a process of its own, when seen)."""
        self.shots += 1
        frame = page.locator(selector)
        frame.scroll_into_view_if_needed()
        frame.screenshot(path=self.folder / f"{self.shots:02d}-{name}.png")
        # back to the top, and a frame drawn there: clicked at once, chromium sent the next
        # click (on the header, scrolled to by Playwright) to the frame's process instead
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(200)

    def forgive(self, text: str, page: Any) -> None:
        """Drop the one problem logged that contains ``text`` (it must come, within 10 s:
        the browser reports its console's messages after the page has moved on)."""
        deadline = time.monotonic() + 10.0
        found = [p for p in self.problems if text in p]
        while not found and time.monotonic() < deadline:
            page.wait_for_timeout(100)  # lets Playwright deliver the events it holds
            found = [p for p in self.problems if text in p]
        assert len(found) == 1, self.problems
        self.problems.remove(found[0])

    def assert_quiet(self) -> None:
        assert self.problems == [], "\n".join(self.problems)
        assert len(list(self.folder.glob("*.png"))) == self.shots > 0


@pytest.fixture
def watch(dashboard: Dashboard, chromium: Any, tmp_path: Path) -> Any:
    context = sign_in(chromium, dashboard)
    yield Watch(context, tmp_path / "screenshots")
    context.close()


def charts(page: Any) -> dict[str, dict[str, tuple[list[str], np.ndarray]]]:
    """Chart title -> line name -> (dates, values), read back from the SVG's data-series."""
    found = page.eval_on_selector_all(
        "svg.chart",
        """svgs => svgs.map(s => [s.getAttribute("aria-label"),
              [...s.querySelectorAll("path[data-series]")].map(p => [p.dataset.name,
                                                                      p.dataset.series])])""",
    )
    out: dict[str, dict[str, tuple[list[str], np.ndarray]]] = {}
    for title, lines in found:
        assert title not in out, f"two charts titled {title!r}"
        out[title] = {name: parse_series(series) for name, series in lines}
    return out


def rows(page: Any, selector: str) -> dict[str, list[str]]:
    """``data-key`` -> the texts of the row's cells after the first."""
    found = page.eval_on_selector_all(
        selector, "rows => rows.map(r => [r.dataset.key, [...r.cells].slice(1).map(c => "
        "c.textContent.trim())])"
    )  # fmt: skip
    return dict(found)


def fact(page: Any, label: str) -> str:
    """The value of a ``<dl class="facts">`` entry."""
    return str(page.locator(f"dl.facts dt:text-is('{label}') + dd").first.inner_text()).strip()


def assert_report_frame(page: Any, run: TrackedRun) -> None:
    """The run's backtest report loaded in its frame, its own script drew its charts, and
    it covers the run's days."""
    from playwright.sync_api import expect

    days = curves(run.out)["dates"]
    frame = page.frame_locator(f"iframe.report[src='/runs/{run.run_id}/report']")
    expect(frame.locator("h1")).to_have_text(f"Backtest, {days[0]} to {days[-1]}")
    expect(frame.locator(".js-plotly-plot .main-svg").first).to_be_visible()


# -- the tests -------------------------------------------------------------------------------


def test_signing_in_with_a_token_into_an_http_only_cookie(
    dashboard: Dashboard, chromium: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    context = chromium.new_context()
    watch = Watch(context, tmp_path / "screenshots")
    page = watch.page()
    page.goto(f"{dashboard.url}/runs")  # no session: to the login page, and back after it
    assert page.url == f"{dashboard.url}/login?next=%2Fruns"
    watch.shoot(page, "login")
    page.fill("#token", "qt_not-a-token")
    with page.expect_response(f"{dashboard.url}/login") as answer:
        page.click("form[action='/login'] button[type=submit]")
    assert answer.value.status == 401
    watch.forgive("the server responded with a status of 401", page)
    expect(page.locator("p.error[role=alert]")).to_contain_text("That token is unknown")
    assert page.evaluate("document.cookie") == ""
    assert [c["name"] for c in context.cookies()] == []
    watch.shoot(page, "login-refused")
    page.fill("#token", dashboard.token)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{dashboard.url}/runs")
    expect(page.locator("header form.who span")).to_have_text(USER)
    assert page.evaluate("document.cookie") == ""  # HttpOnly: the page's script never sees it
    (cookie,) = context.cookies()
    assert (cookie["name"], cookie["value"], cookie["httpOnly"], cookie["sameSite"]) == (
        "quarry_session", dashboard.token, True, "Strict")  # fmt: skip
    watch.shoot(page, "signed-in")
    page.click("header form.who button[type=submit]")  # sign out
    page.wait_for_url(f"{dashboard.url}/login")
    assert context.cookies() == []
    page.goto(f"{dashboard.url}/jobs")
    assert page.url == f"{dashboard.url}/login?next=%2Fjobs"
    watch.assert_quiet()
    context.close()


def test_a_workflow_job_from_the_form_to_its_run_and_a_comparison(
    watch: Watch, dashboard: Dashboard
) -> None:
    from playwright.sync_api import expect

    url = dashboard.url
    first = dashboard.runs[0]
    page = watch.page()
    page.goto(f"{url}/jobs/new")
    watch.shoot(page, "submit-form")
    page.fill("#manifest", dashboard.workflow_manifest())
    page.click("form[action='/jobs/new'] button[type=submit]")
    page.wait_for_url(re.compile(rf"^{re.escape(url)}/jobs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])
    dashboard.jobs.append(job_id)
    expect(page.locator("#status")).to_have_text(re.compile("^(queued|running)$"))
    watch.shoot(page, "job-submitted")

    # meanwhile, in a second tab: a job that sleeps, cancelled from its page
    other = watch.page()
    other.goto(f"{url}/jobs/new")
    sleeper_manifest = (
        f"name: sleeper\nproject: {PROJECT}\nresources: {{cpus: 0.5, memory: 256Mi}}\n"
        f"run: {{command: [{sys.executable}, -c, {SLEEPER!r}]}}\n"
    )
    other.fill("#manifest", sleeper_manifest)
    other.click("form[action='/jobs/new'] button[type=submit]")
    other.wait_for_url(re.compile(rf"^{re.escape(url)}/jobs/\d+$"))
    sleeper = int(other.url.rsplit("/", 1)[1])
    expect(other.locator("#status")).to_have_text("running")
    expect(other.locator("#log")).to_have_text("sleeping")  # the log followed as it grows
    watch.shoot(other, "sleeper-running")
    with other.expect_navigation(url=f"{url}/jobs/{sleeper}"):  # the form's 303 back here
        other.click(f"#summary form[action='/jobs/{sleeper}/cancel'] button")
    expect(other.locator("#status")).to_have_text("cancelled")
    assert other.locator("#summary form[action$='/cancel']").count() == 0
    watch.shoot(other, "sleeper-cancelled")
    ended = dashboard.wait_attempt(sleeper)  # its worker stops the process
    assert (ended["status"], ended["attempts"][-1]["outcome"]) == ("cancelled", "cancelled")
    # the page goes on refreshing until the attempt's end is recorded, then shows it
    expect(other.locator("#attempts tbody tr td:nth-child(2)")).to_have_text(["cancelled"])
    other.close()

    # the workflow's page follows it to the end by itself: no reload from here
    expect(page.locator("#status")).to_have_text("succeeded", timeout=WORKFLOW_SECONDS * 1000)
    expect(page.locator("#log[data-done=true]")).to_have_count(1)
    attempt_log = dashboard.home / "job-logs" / f"job-{job_id}" / "attempt-1.log"
    shown_log = page.locator("#log").text_content()
    assert shown_log == attempt_log.read_text(errors="replace")
    assert "steps: features cached, train ran, backtest ran, gate ran" in shown_log
    watch.shoot(page, "job-succeeded")
    attempts = page.locator("#attempts tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].slice(0, 4).map(c => c.textContent.trim()))"
    )
    assert attempts == [["1", "succeeded", "", "0"]]
    out = Path(fact(page, "Output"))
    assert out == dashboard.home / "jobs" / str(job_id) / "out"
    second = TrackedRun.read(out)
    dashboard.record_job_run(job_id)
    results = second.results
    summary = page.locator("#summary p", has=page.locator("#run-link")).inner_text()
    version = results.get("model_version")
    assert summary == (
        f"MLflow run {second.run_id[:8]} IC {as_num(results['ic'])}, Rank IC "
        f"{as_num(results['rank_ic'])}, Sharpe {as_num(results['sharpe'])}, excess return "
        f"{as_pct(results['excess_annualized_return'])}, max drawdown "
        f"{as_pct(results['max_drawdown'])}{f', model version {version}' if version else ''}"
        f"{' (promoted)' if results['promoted'] else ''}."
    )

    # its run: the figures of results.json, the curves of returns.parquet, the report
    page.click("#run-link")
    page.wait_for_url(f"{url}/runs/{second.run_id}")
    assert fact(page, "Run id") == second.run_id
    gate = results["gate"]
    assert fact(page, "Gate") == (
        f"{'promoted' if results['promoted'] else 'not promoted'}: {gate['reason']}")  # fmt: skip
    figures = rows(page, "#figures tr[data-key]")
    assert list(figures)[:5] == list(HEADLINE)
    for key, text in expected_figures(results).items():
        assert figures[key] == [text], key
    drawn = charts(page)
    expected = curves(out)
    assert set(drawn) == {"Cumulative return", "Drawdown"}
    assert set(drawn["Cumulative return"]) == {"strategy (net)", "benchmark"}
    assert_line(drawn["Cumulative return"]["strategy (net)"], expected["dates"], expected["net"])
    assert_line(drawn["Cumulative return"]["benchmark"], expected["dates"], expected["benchmark"])
    assert_line(drawn["Drawdown"]["drawdown"], expected["dates"], expected["drawdown"])
    assert_report_frame(page, second)
    watch.shoot(page, "run")
    watch.shoot_frame(page, "iframe.report", "run-report")

    # the runs, two ticked, compared
    page.click("header nav a[href='/runs']")
    page.wait_for_url(f"{url}/runs")
    go = page.locator("#compare button[type=submit]")
    expect(go).to_be_disabled()
    page.check(f"#runs tr[data-run='{second.run_id}'] input[name=run]")
    expect(go).to_be_disabled()
    page.check(f"#runs tr[data-run='{first.run_id}'] input[name=run]")
    expect(go).to_be_enabled()
    unticked = page.locator("#runs input[name=run]:not(:checked)")
    for k in range(unticked.count()):  # no third one may be ticked
        expect(unticked.nth(k)).to_be_disabled()
    for run in (first, second):
        cells = page.eval_on_selector_all(
            f"#runs tr[data-run='{run.run_id}'] td[data-key]",
            "cells => cells.map(c => [c.dataset.key, c.textContent.trim()])",
        )
        assert dict(cells) == {k: expected_figures(run.results)[k] for k in HEADLINE}
    watch.shoot(page, "runs-ticked")
    go.click()
    page.wait_for_url(re.compile(rf"^{re.escape(url)}/runs/compare\?"))
    ticked = [v for k, v in re.findall(r"[?&](\w+)=([^&]+)", page.url) if k == "run"]
    assert sorted(ticked) == sorted([first.run_id, second.run_id])
    a, b = sorted((first, second), key=lambda r: ticked.index(r.run_id))
    names = page.eval_on_selector_all(
        "#comparison thead th a", "links => links.map(l => [l.getAttribute('href'), l.textContent])"
    )
    assert [href for href, _ in names] == [f"/runs/{a.run_id}", f"/runs/{b.run_id}"]
    table = rows(page, "#comparison tr[data-key]")
    assert list(table)[:5] == list(HEADLINE)
    for key, name in RESULT_KEYS.items():
        x, y = a.results[name], b.results[name]
        assert table[key] == [shown(key, x), shown(key, y), shown(key, y - x)], key
    drawn = charts(page)
    assert set(drawn) == {"Cumulative return", "Drawdown"}
    for title, line in (("Cumulative return", "net"), ("Drawdown", "drawdown")):
        assert len(drawn[title]) == 2, drawn[title].keys()
        for (name, (dates, values)), run in zip(drawn[title].items(), (a, b), strict=True):
            assert name.startswith(dict(names)[f"/runs/{run.run_id}"]), name
            mine = curves(run.out)
            assert_line((dates, values), mine["dates"], mine[line])
    for run in (a, b):
        assert_report_frame(page, run)
    watch.shoot(page, "compare")
    watch.assert_quiet()


def test_the_models_and_datasets_pages(watch: Watch, dashboard: Dashboard) -> None:
    from playwright.sync_api import expect

    from quarry.data import Store, check_health

    url = dashboard.url
    registered = [r for r in dashboard.runs if r.results.get("model_version")]
    assert registered, "the first run registers a model"
    page = watch.page()
    page.goto(f"{url}/")
    watch.shoot(page, "home")
    page.click("header nav a[href='/models']")
    page.wait_for_url(f"{url}/models")
    promoted = [r.results["model_version"] for r in registered if r.results["promoted"]]
    champion = promoted[-1]
    latest = max(r.results["model_version"] for r in registered)
    watch.shoot(page, "models")
    cells = page.locator(f"#models tr[data-model='{MODEL}'] td").all_inner_texts()
    assert cells, page.locator("#models").inner_text()
    assert [cells[0], *cells[2:5]] == [MODEL, str(len(registered)), str(latest),
                                       f"champion → v{champion}"]  # fmt: skip
    assert page.locator("#served").count() == 0  # this server serves no models

    page.click(f"#models tr[data-model='{MODEL}'] a")
    page.wait_for_url(f"{url}/models/{MODEL}")
    assert fact(page, "Aliases") == f"champion → v{champion}"
    for run in registered:
        version, gate = run.results["model_version"], run.results["gate"]
        link = page.locator(f"#versions tr[data-version='{version}'] a")
        assert link.get_attribute("href") == f"/runs/{run.run_id}"
        decision = page.locator(f"section.decision[data-version='{version}']")
        expect(decision.locator("h3 .status")).to_have_text(
            "promoted" if run.results["promoted"] else "not promoted")  # fmt: skip
        expect(decision.locator("p.reason")).to_have_text(gate["reason"])
        figures = {
            cells[0]: cells[1:]
            for cells in decision.locator("tbody tr").evaluate_all(
                "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))"
            )
        }
        theirs = gate.get("champion") or {}  # no champion for the first: "-"
        labels = {"ic": "IC", "rank_ic": "Rank IC", "sharpe": "Sharpe",
                  "information_ratio": "Information ratio"}  # fmt: skip
        for figure, label in labels.items():
            mine = as_num(gate["challenger"][figure])
            champion_text = as_num(theirs[figure]) if figure in theirs else "-"
            assert figures[label] == [mine, champion_text], figure
    history = page.locator("#history tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent.trim()))"
    )
    assert [(h[1], h[3]) for h in history] == [("champion", f"v{v}") for v in reversed(promoted)]
    watch.shoot(page, "model")

    page.click("header nav a[href='/datasets']")
    page.wait_for_url(f"{url}/datasets")
    cells = page.locator(f"#datasets tr[data-dataset='{DATASET}'] td").all_inner_texts()
    assert cells[:5] == [DATASET, USER, PROJECT, "project",
                         "The dashboard tests' synthetic market."]  # fmt: skip
    watch.shoot(page, "datasets")
    page.click(f"#datasets tr[data-dataset='{DATASET}'] a")
    page.wait_for_url(f"{url}/datasets/{DATASET}")
    # health and coverage come after the page, through its script
    expect(page.locator("#coverage[data-loaded=true] svg.chart")).to_have_count(1)
    expect(page.locator("#health[data-loaded=true] #health-checks")).to_have_count(1)
    bars = pl.read_delta(str(dashboard.store / "bars"))
    daily = (bars.with_columns(pl.col("date").cast(pl.Date)).group_by("date")
             .agg(pl.col("instrument").n_unique()).sort("date"))  # fmt: skip
    (line,) = charts(page)["Instruments with a bar, by day"].values()
    assert line[0] == [str(d) for d in daily["date"].to_list()]
    np.testing.assert_array_equal(line[1], daily["instrument"].to_numpy())
    total = bars["instrument"].n_unique()
    assert page.locator("#coverage p").first.inner_text() == (
        f"{total} instruments from {line[0][0]} to {line[0][-1]}."
    )
    report = check_health(Store(dashboard.store))
    checks = page.locator("#health-checks tr[data-check]").evaluate_all(
        "rows => rows.map(r => [r.dataset.check, r.cells[2].textContent.trim()])"
    )
    assert dict(checks) == {c.name: f"{c.count:,}" for c in report.checks}
    expect(page.locator("#health-status")).to_have_text(
        "healthy" if report.ok else "problems found")  # fmt: skip
    commits = Store(dashboard.store).commits()
    expect(page.locator("#commits tbody tr")).to_have_count(min(len(commits), 100))
    watch.shoot(page, "dataset")
    watch.assert_quiet()
