"""The runs pages: the tracked runs a page at a time with their figures (IC, Rank IC, Sharpe,
excess return, drawdown), a run with its equity curve and its backtest report, and two runs
side by side.

The backtest report is the workflow's own ``report.html`` (plotly embedded in it, no
network), served in a frame under a policy of its own: a sandbox (an origin of its own, so
its script cannot read the dashboard or its cookie) that lets its inline script and styles
run, and still no address outside this server.
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from quarry._svg import line_chart
from quarry.exceptions import UsageError
from quarry.tracking._runs import RUN_FIGURES, RunSummary, get_run, run_artifact, search_runs
from quarry.ui._render import figure_is_pct, figure_label, page
from quarry.ui._routes import pages
from quarry.ui._session import ViewerDep

__all__ = ["REPORT_CSP", "router"]

router = pages()
PER_PAGE = 50
RunId = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
REPORT = "backtest/report.html"
RETURNS = "backtest/returns.parquet"
REPORT_CSP = ("sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; "
              "style-src 'unsafe-inline'; img-src data:; font-src data:; "
              "frame-ancestors 'self'")  # fmt: skip


def _run(run_id: str) -> RunSummary:
    run = get_run(run_id)
    if run is None:
        raise HTTPException(404, f"no run {run_id} in the tracking store")
    return run


def curves(run: RunSummary) -> dict[str, Any] | None:
    """The run's backtest, day by day: cumulative net return, the benchmark's, drawdown."""
    path = run_artifact(run.run_id, RETURNS, run.artifact_uri)
    if path is None:
        return None
    import polars as pl

    returns = pl.read_parquet(path, columns=["date", "return_net", "benchmark"]).sort("date")
    dates = returns["date"].to_numpy()
    wealth = np.cumprod(1.0 + returns["return_net"].fill_null(0.0).to_numpy())
    bench = np.cumprod(1.0 + returns["benchmark"].fill_null(0.0).to_numpy())
    drawdown = wealth / np.maximum.accumulate(wealth) - 1.0
    return {"dates": dates, "net": wealth - 1.0, "benchmark": bench - 1.0, "drawdown": drawdown}


@router.get("/runs")
def runs_page(
    request: Request, viewer: ViewerDep, experiment: str | None = None,
    after: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:  # fmt: skip
    """Tracked runs, newest first, a page at a time; tick two to compare them."""
    try:
        found = search_runs(experiment=experiment or None, max_results=PER_PAGE,
                            page_token=after or None)  # fmt: skip
    except UsageError as exc:
        raise HTTPException(422, str(exc)) from exc
    if experiment and experiment not in found.experiments:
        raise HTTPException(404, f"no experiment {experiment!r}; there are: "
                            f"{', '.join(found.experiments) or 'none'}")  # fmt: skip
    return page(request, "runs.html", viewer=viewer, title="Runs", runs=found.runs,
                next_token=found.next_token, experiments=found.experiments,
                experiment=experiment or None, figures=RUN_FIGURES,
                first=after is None)  # fmt: skip


def _figure_rows(runs: list[RunSummary]) -> list[dict[str, Any]]:
    """Every metric any of ``runs`` has: the table's headline figures first."""
    keys = [key for _, key, _ in RUN_FIGURES]
    labels = {key: (label, how) for label, key, how in RUN_FIGURES}
    rest = sorted({k for r in runs for k in r.metrics} - set(keys))
    rows = []
    for key in [*keys, *rest]:
        values = [r.figure(key) for r in runs]
        label, how = labels.get(key, (figure_label(key), "pct" if figure_is_pct(key) else "num"))
        rows.append({"key": key, "label": label, "how": how, "values": values})
    return rows


@router.get("/runs/compare")
def compare_page(
    request: Request, viewer: ViewerDep,
    run: Annotated[list[str], Query(max_length=64)],
) -> Response:  # fmt: skip
    """Two runs side by side: their figures, equity curves on one chart, their reports."""
    if len(run) != 2 or run[0] == run[1]:
        raise HTTPException(422, "tick two different runs to compare them")
    a, b = _run(run[0]), _run(run[1])
    series, drawdowns = {}, {}
    for r in (a, b):
        c = curves(r)
        # two runs of one name (a search's trials) are told apart by their ids
        name = r.name if a.name != b.name else f"{r.name} {r.run_id[:6]}"
        if c is not None:
            series[f"{name} (net)"] = (c["dates"], c["net"])
            drawdowns[name] = (c["dates"], c["drawdown"])
    charts = []
    if series:
        charts = [line_chart(series, title="Cumulative return", y_format="pct"),
                  line_chart(drawdowns, title="Drawdown", y_format="pct")]  # fmt: skip
    rows = _figure_rows([a, b])
    for row in rows:
        x, y = row["values"]
        row["diff"] = y - x if x is not None and y is not None else None
    return page(request, "compare.html", viewer=viewer, title=f"{a.name} vs {b.name}",
                a=a, b=b, rows=rows, charts=charts)  # fmt: skip


@router.get("/runs/{run_id}")
def run_page(request: Request, run_id: RunId, viewer: ViewerDep) -> Response:
    """A run: figures, settings, the gate's decision, the equity curve, the report."""
    run = _run(run_id)
    c = curves(run)
    charts = []
    if c is not None:
        charts = [line_chart({"strategy (net)": (c["dates"], c["net"]),
                              "benchmark": (c["dates"], c["benchmark"])},
                             title="Cumulative return", y_format="pct"),
                  line_chart({"drawdown": (c["dates"], c["drawdown"])}, title="Drawdown",
                             y_format="pct")]  # fmt: skip
    gate = {k.removeprefix("quarry.gate."): v for k, v in run.tags.items()
            if k.startswith("quarry.gate.")}  # fmt: skip
    return page(request, "run.html", viewer=viewer, title=f"Run {run.name}", run=run,
                rows=_figure_rows([run]), charts=charts, gate=gate,
                report=run_artifact(run.run_id, REPORT, run.artifact_uri) is not None)  # fmt: skip


@router.get("/runs/{run_id}/report")
def run_report(run_id: RunId, viewer: ViewerDep) -> Response:
    """The run's backtest report, as the workflow wrote it, for the run's page's frame."""
    path = run_artifact(run_id, REPORT)
    if path is None:
        raise HTTPException(404, f"run {run_id} has no backtest report")
    return FileResponse(path, media_type="text/html",
                        headers={"Content-Security-Policy": REPORT_CSP,
                                 "X-Content-Type-Options": "nosniff",
                                 "Cache-Control": "private, max-age=3600"})  # fmt: skip
