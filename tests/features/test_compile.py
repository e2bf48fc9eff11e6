"""Plan.build's checks on the requested features, made before any data is read: names that
would clobber the label or the keys, and expressions too deep or too large to handle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quarry.exceptions import ExpressionError, UsageError
from quarry.features import F, Plan, compute, materialize
from quarry.features._expr import Expr

LABEL = "Ref($close, -2)/Ref($close, -1) - 1"


@pytest.mark.parametrize("name", ["LABEL0", "LABEL1", "LABELX", "instrument", "date"])
def test_a_feature_named_like_a_label_or_a_key_is_refused(
    frame: pl.DataFrame, name: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match=f"feature name '{name}' is reserved"):
        Plan.build({name: "$close"})
    with pytest.raises(UsageError, match=f"'{name}' is reserved"):
        compute(frame, {"MA3": "Mean($close, 3)", name: "$close"}, label=LABEL)
    with pytest.raises(UsageError, match=f"'{name}' is reserved"):
        materialize(frame, {name: "$close"}, tmp_path / "f.parquet", label=LABEL)
    assert not (tmp_path / "f.parquet").exists()


def _chain(terms: int) -> Expr:
    expr = F("close")
    for _ in range(terms - 1):
        expr = expr + F("close")
    return expr


def test_an_expression_built_too_deep_in_python_is_refused_by_name(frame: pl.DataFrame) -> None:
    with pytest.raises(ExpressionError) as err:
        compute(frame, {"SUM": _chain(5_000)})
    message = str(err.value)
    assert message.startswith("feature 'SUM': ") and "100 levels" in message
    assert "\n" not in message and len(message) < 400


def test_an_expression_built_too_large_in_python_is_refused_by_name(frame: pl.DataFrame) -> None:
    doubled = F("close")
    for _ in range(40):  # 2**41 - 1 nodes in 41 distinct ones: its text would not fit
        doubled = doubled + doubled
    with pytest.raises(ExpressionError, match=r"^feature 'BIG': .*10,000 nodes"):
        compute(frame, {"BIG": doubled})
    with pytest.raises(ExpressionError, match=r"^label: .*10,000 nodes"):
        Plan.build({"C": "$close"}, label=doubled)


def test_an_expression_at_the_depth_limit_is_computed(frame: pl.DataFrame) -> None:
    deepest = _chain(100)  # 99 additions over a field: 100 levels
    out = compute(frame, {"SUM": deepest})
    np.testing.assert_allclose(
        out["SUM"].to_numpy(), 100 * frame["close"].to_numpy(), rtol=1e-12, equal_nan=True
    )
