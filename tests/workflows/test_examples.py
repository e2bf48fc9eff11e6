"""The example workflows stay valid as the schema changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarry.workflows import load_workflow

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "workflows").glob("*.yaml"))


def test_there_are_the_three_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"alpha158_lightgbm", "alpha158_lightgbm_optimizer",
            "alpha158_lightgbm_rolling"} <= names  # fmt: skip


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_example_loads(path: Path) -> None:
    spec = load_workflow(path)
    assert spec.name == path.stem
    if spec.name.endswith("optimizer"):
        assert spec.backtest.strategy == "optimizer" and spec.backtest.optimizer is not None
        assert spec.backtest.optimizer.industry_bound is not None
    if spec.name.endswith("rolling"):
        assert spec.walk_forward is not None and spec.segments is None
    if spec.name == "alpha158_lightgbm":  # Qlib's benchmark settings
        b = spec.backtest
        assert (b.topk, b.n_drop, b.open_cost, b.close_cost, b.min_cost, b.limit_threshold) == (
            50, 5, 0.0005, 0.0015, 5, 0.095)  # fmt: skip


def test_the_backtest_section_defaults_are_the_engines() -> None:
    import dataclasses

    from quarry.backtest import BacktestConfig
    from quarry.workflows._spec import CONFIG_FIELDS, BacktestSpec

    engine = {f.name: f.default for f in dataclasses.fields(BacktestConfig)}
    section = BacktestSpec()
    assert {name: getattr(section, name) for name in CONFIG_FIELDS} == {
        name: engine[name] for name in CONFIG_FIELDS}  # fmt: skip
