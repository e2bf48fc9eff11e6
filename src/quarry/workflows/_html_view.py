"""A workflow run's rich view in a notebook (``RunResult._repr_html_``): results.json's
figures (the test segment's IC and Rank IC, the backtest's), the promotion gate's decision,
the model version and MLflow run, which steps ran and which came from the cache, and the
run's warnings and notes.

Takes the run's parts rather than the run, so that this module and ``_run`` do not import
each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quarry._html import figure, items, paragraph, table, view

__all__ = ["FIGURES", "run_html"]

#: results.json's figures: key, label, kind
FIGURES = (
    ("ic", "Test IC", "ic"),
    ("icir", "Test ICIR", "num"),
    ("rank_ic", "Test Rank IC", "ic"),
    ("rank_icir", "Test Rank ICIR", "num"),
    ("annualized_return", "Annualized return", "pct"),
    ("excess_annualized_return", "Excess annualized return", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("information_ratio", "Information ratio", "num"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("turnover", "Average daily turnover", "pct"),
    ("orders_filled", "Orders filled", "int"),
    ("days_without_position", "Days ending without a position", "int"),
)


def run_html(results: Mapping[str, Any], steps: Mapping[str, str]) -> str:
    """The view of a run with these ``results`` (results.json) and ``steps`` (step ->
    ``ran`` or ``cached``)."""
    rows = [[label, figure(results.get(key), kind)] for key, label, kind in FIGURES]
    gate = results.get("gate")
    promoted = "yes" if results.get("promoted") else "no"
    reason = gate.get("reason") if isinstance(gate, Mapping) else None
    rows.append(["Promoted", f"{promoted}: {reason}" if reason else promoted])
    version = results.get("model_version")
    rows.append(["Model version", "not registered" if version is None else str(version)])
    rows.append(["MLflow run", results.get("mlflow_run_id") or "not tracked"])
    if results.get("executor"):
        rows.append(["Executor", str(results["executor"])])
    parts = [
        items(results.get("warnings") or (), "warnings"),
        table(rows, header=["Results", ""], name="results"),
        table(
            [[name, how] for name, how in steps.items()],
            header=["Step", "this run"],
            name="steps",
        ),
    ]
    search = results.get("search")
    if isinstance(search, Mapping):
        found = [
            ["Metric", str(search.get("metric"))],
            ["Best value", figure(search.get("best_value"), "ic")],
            ["Trials", figure(search.get("trials"), "int")],
        ]
        parts.append(table(found, header=["Search", ""], name="search"))
    parts.append(items(results.get("notes") or (), "notes"))
    parts.append(
        paragraph(
            "IC figures are the test segment's; the backtest's are net of costs. The run's "
            "folder holds results.json, report.html and the backtest's files."
        )
    )
    return view(f"Workflow run: {results.get('workflow', '')}", *parts, name="run")
