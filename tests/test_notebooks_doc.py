"""docs/notebooks.md runs as written: its ```python blocks, in order, in one namespace (a
notebook's kernel), in a fresh folder that stands for the repository (``examples`` linked to
the real one, ``QUARRY_HOME`` inside it); then each object's rich view holds its figures."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.html_parsing import assert_safe

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "notebooks.md"


def python_blocks() -> list[tuple[int, str]]:
    """The doc's ```python blocks with the line of each opening fence."""
    text = DOC.read_text()
    return [
        (text.count("\n", 0, m.start()) + 1, m["body"])
        for m in re.finditer(r"^```python\n(?P<body>.*?)^```\s*$", text, re.M | re.S)
    ]


def test_the_doc_has_a_cell_for_each_step() -> None:
    blocks = "\n".join(body for _, body in python_blocks())
    for call in ("generate(", "compute(", "train(", "analyze(", "run_backtest(",
                 "load_workflow(", "run_workflow("):  # fmt: skip
        assert call in blocks, call
    assert "examples/workflows/alpha158_lightgbm.yaml" in blocks
    assert (REPO / "examples" / "workflows" / "alpha158_lightgbm.yaml").exists()


@pytest.mark.slow
def test_every_block_runs_in_order_and_each_view_holds_its_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "examples").symlink_to(REPO / "examples")
    monkeypatch.setenv("QUARRY_HOME", str(root / "runs" / "home"))
    monkeypatch.chdir(root)
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for line, body in python_blocks():
        exec(compile(body, f"{DOC}:{line}", "exec"), namespace)  # noqa: S102 - the doc's own code

    store, trained, report = namespace["store"], namespace["trained"], namespace["report"]
    backtest, run = namespace["backtest"], namespace["run"]
    view = assert_safe(store._repr_html_())
    assert view.table("facts").pairs()["Instruments"] == "80"
    bars = {row[0]: row for row in view.table("tables").rows}["bars"]
    assert bars[3].startswith("date: 2015-01-02 to 2020-")

    view = assert_safe(trained._repr_html_())
    test = trained.metrics["test"]
    row = next(r for r in view.table("segments").rows if r[0] == "test")
    assert row[1] == f"{test['ic']:.4f}" and row[3] == f"{test['rank_ic']:.4f}"
    assert test["rank_ic"] > 0.02  # the planted reversal, found
    assert view.table("facts").pairs()["MLflow run"] == trained.run_id

    view = assert_safe(report._repr_html_())
    assert view.table("summary").pairs()["Mean Rank IC"] == f"{report.summary['rank_ic']:.4f}"
    assert view.chart("Information coefficient").lines["Rank IC, 20-day mean"].values.size > 200

    view = assert_safe(backtest._repr_html_())
    net = view.table("metrics").column("net of costs")
    assert net["Sharpe"] == f"{backtest.metrics['sharpe']:.3f}"
    assert net["Excess annualized return"] == f"{backtest.metrics['excess_annualized_return']:.2%}"
    assert (root / "runs" / "notebook" / "backtest" / "report.html").exists()

    view = assert_safe(run._repr_html_())
    results = view.table("results").pairs()
    assert results["Test Rank IC"] == f"{run.results['rank_ic']:.4f}"
    assert results["Sharpe"] == f"{run.results['sharpe']:.3f}"
    assert results["Model version"] == "1" and results["Promoted"].startswith("yes: ")
    assert results["MLflow run"] == run.results["mlflow_run_id"]
    assert view.table("steps").rows == [[s, "ran"] for s in ("features", "train", "backtest",
                                                             "gate")]  # fmt: skip
    report_file = root / "runs" / "lgb" / "report.html"
    assert report_file.exists()
    assert report_file.as_uri() in capsys.readouterr().out  # the last cell printed where it is
