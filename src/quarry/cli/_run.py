"""``quarry run``: a research workflow from a YAML file, end to end."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer

from quarry.cli._output import (
    console,
    err,
    fail_cleanly,
    note,
    print_json,
    tracking_line,
    warn,
)


def _fmt(value: Any, pct: bool = False) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return f"{value:.2%}" if pct else f"{value:.4f}"


@fail_cleanly
def run_cmd(
    workflow: Annotated[Path, typer.Argument(help="The workflow file (YAML).")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for results.json and report.html.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Run every step again, ignoring the cache.")] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            help="Where the steps' pieces (feature chunks, walk-forward windows, search "
            "trials) run: local, or ray (Ray tasks). Default: the file's execution.executor, "
            "else local. Results are the same either way."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="The Ray cluster for --executor ray: auto, HOST:PORT or ray://HOST:10001. "
            "Default: the file's execution.ray_address, else $RAY_ADDRESS, else a Ray "
            "started for this run."
        ),
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="Use this store instead of the file's data.store.")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print results.json's figures (and out, report) as JSON on stdout."
        ),
    ] = False,
) -> None:
    """Run a research workflow: features, training, signal analysis, backtest, report,
    MLflow tracking and the promotion gate.

    Each step is reused from the step cache ($QUARRY_HOME/cache/steps) when nothing it
    depends on changed: its settings, the steps before it, and the store's commits (a
    vendor correction reruns the features and what follows). Writes OUT/results.json (ic,
    icir, rank_ic, rank_icir, annualized_return, excess_annualized_return,
    information_ratio, max_drawdown, promoted, mlflow_run_id) and OUT/report.html.

    Example: quarry run examples/workflows/alpha158_lightgbm.yaml --out runs/lgb
    (add --executor ray --ray-address auto to run the pieces on the Ray cluster this
    machine belongs to)
    """
    from quarry.workflows import load_workflow, run_workflow

    spec = load_workflow(workflow)
    if store:
        spec = spec.model_copy(update={"data": spec.data.model_copy(update={"store": store})})
    target = out or Path("runs") / spec.name
    err.print(tracking_line(), highlight=False, soft_wrap=True)
    with err.status("starting") as status:

        def step(message: str) -> None:
            if not message.endswith(": running"):  # a step's outcome: cached, or its time
                err.print(message, highlight=False)
            status.update(message)

        result = run_workflow(spec, target, force=force, executor=executor,
                              ray_address=ray_address, say=step,
                              progress=status.update)  # fmt: skip
    r = result.results
    for message in r.get("warnings", []):
        warn(message)
    for message in r.get("notes", []):
        note(message)
    if as_json:
        print_json({**r, "out": str(target), "report": str(target / "report.html")})
        return
    rows = [
        ("IC", _fmt(r.get("ic"))), ("Rank IC", _fmt(r.get("rank_ic"))),
        ("ICIR", _fmt(r.get("icir"))), ("Rank ICIR", _fmt(r.get("rank_icir"))),
        ("annualized return", _fmt(r.get("annualized_return"), True)),
        ("annualized excess return", _fmt(r.get("excess_annualized_return"), True)),
        ("information ratio", _fmt(r.get("information_ratio"))),
        ("max drawdown", _fmt(r.get("max_drawdown"), True)),
        ("promoted", f"{'yes' if r.get('promoted') else 'no'} ({r['gate'].get('reason')})"),
    ]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    steps = ", ".join(f"{k} {v}" for k, v in result.steps.items())
    console.print("\n".join(f"{k:<{width}}  {v}" for k, v in rows), highlight=False)
    console.print(f"steps: {steps}\nreport: {target / 'report.html'}", highlight=False)
