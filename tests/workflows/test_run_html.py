"""A workflow run's rich view: results.json's figures, the gate, the model version and MLflow
run, the steps, warnings and notes, each as the run holds it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from quarry.workflows import RunResult, load_workflow
from quarry.workflows._run import _results
from tests.html_parsing import assert_safe
from tests.workflows.helpers import small_spec, write_spec

# label -> (results key, how it is written), as a reader would check them
FIGURES = {
    "Test IC": ("ic", "{:.4f}"),
    "Test ICIR": ("icir", "{:.3f}"),
    "Test Rank IC": ("rank_ic", "{:.4f}"),
    "Test Rank ICIR": ("rank_icir", "{:.3f}"),
    "Annualized return": ("annualized_return", "{:.2%}"),
    "Excess annualized return": ("excess_annualized_return", "{:.2%}"),
    "Sharpe": ("sharpe", "{:.3f}"),
    "Information ratio": ("information_ratio", "{:.3f}"),
    "Max drawdown": ("max_drawdown", "{:.2%}"),
    "Average daily turnover": ("turnover", "{:.2%}"),
    "Orders filled": ("orders_filled", "{:,}"),
    "Days ending without a position": ("days_without_position", "{:,}"),
}


def _run(tmp_path: Path, **records: Any) -> RunResult:
    """A run's result as ``run_workflow`` assembles it (``_results``) from step records."""
    spec = load_workflow(write_spec(tmp_path / "w.yaml", small_spec(tmp_path / "store")))
    trained = {
        "run_id": "0123abcd",
        "version": 3,
        "metrics": {"test": {"ic": 0.04567, "icir": 0.51, "rank_ic": 0.05123, "rank_icir": 0.6}},
        "warnings": ["the model <learned> little & more"],
        **records.pop("trained", {}),
    }
    backtest = {
        "metrics": {
            "annualized_return": 0.1234,
            "excess_annualized_return": -0.0123,
            "information_ratio": 0.8,
            "max_drawdown": -0.2,
            "sharpe": 1.5,
            "turnover": 0.15,
            "orders_filled": 12345,
            "days_without_position": 2,
            "gross": {"sharpe": 1.7},
        },
        "warnings": ["a backtest warning"],
        "notes": ["no volume for 3 instruments"],
    }
    gate = records.pop("gate", {"promoted": True, "reason": "beats the champion on rank_ic"})
    steps = records.pop("steps", {"features": "cached", "train": "ran", "backtest": "ran"})
    return RunResult(_results(spec, trained, backtest, gate, steps, "local"), steps)


def test_the_results_are_the_runs_own(tmp_path: Path) -> None:
    run = _run(tmp_path)
    view = assert_safe(run._repr_html_())
    r = run.results
    assert view.title == "Workflow run: small"
    results = view.table("results").pairs()
    for label, (key, fmt) in FIGURES.items():
        assert results[label] == fmt.format(r[key]), label
    assert results["Test Rank IC"] == "0.0512" and results["Orders filled"] == "12,345"
    assert results["Promoted"] == "yes: beats the champion on rank_ic"
    assert results["Model version"] == "3"
    assert results["MLflow run"] == "0123abcd"
    assert results["Executor"] == "local"
    assert view.table("steps").rows == [["features", "cached"], ["train", "ran"],
                                        ["backtest", "ran"]]  # fmt: skip
    assert view.lists["quarry-warnings"] == [
        "the model <learned> little & more", "a backtest warning"]  # fmt: skip
    assert view.lists["quarry-notes"] == ["no volume for 3 instruments"]
    assert not any("quarry-search" in t.classes for t in view.tables)


def test_an_undefined_figure_an_unregistered_model_and_a_search_show_as_such(
    tmp_path: Path,
) -> None:
    run = _run(
        tmp_path,
        trained={
            "version": None,
            "run_id": None,
            "warnings": [],
            "metrics": {"test": {"ic": math.nan, "rank_ic": None}},
            "search": {
                "best_params": {"num_leaves": 8},
                "best_value": 0.0312,
                "metric": "rank_ic",
                "trials": 20,
                "run_id": "x",
            },
        },
        gate={"promoted": False, "reason": "no registered model (tracking.register)"},
    )
    view = assert_safe(run._repr_html_())
    results = view.table("results").pairs()
    assert results["Test IC"] == "n/a" and results["Test Rank IC"] == "n/a"  # null in JSON
    assert results["Promoted"] == "no: no registered model (tracking.register)"
    assert results["Model version"] == "not registered"
    assert results["MLflow run"] == "not tracked"
    assert view.table("search").pairs() == {"Metric": "rank_ic", "Best value": "0.0312",
                                            "Trials": "20"}  # fmt: skip
    assert view.lists["quarry-warnings"] == ["a backtest warning"]
