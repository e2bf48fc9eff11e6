"""last_known against pandas.merge_asof on random sorted frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from quarry.data._steps import last_known


def _frame(rng: np.random.Generator, n: int, names: list[str], col: str) -> pl.DataFrame:
    inst = rng.choice(names, n)
    day = pd.Timestamp("2020-01-01") + pd.to_timedelta(rng.integers(0, 400, n), unit="D")
    return (
        pl.DataFrame(
            {"instrument": inst, col: day.values.astype("datetime64[D]"), "v": rng.normal(size=n)}
        )
        .unique(["instrument", col])
        .sort("instrument", col)
    )


@pytest.mark.parametrize(("seed", "strict"), [(0, False), (1, True), (2, False), (3, True)])
def test_matches_merge_asof(seed: int, strict: bool) -> None:
    rng = np.random.default_rng(seed)
    left = _frame(rng, 5000, [f"I{i}" for i in range(40)], "date").drop("v")
    right = _frame(rng, 300, [f"I{i}" for i in range(0, 60, 2)], "at")  # some never appear
    got = last_known(left, right, "date", "at", ["v"], strict=strict)
    ref = pd.merge_asof(
        left.to_pandas().sort_values("date"),
        right.to_pandas().sort_values("at"),
        left_on="date",
        right_on="at",
        by="instrument",
        allow_exact_matches=not strict,
    ).sort_values(["instrument", "date"])
    np.testing.assert_array_equal(got.values["v"], ref["v"].to_numpy())
    in_right = left["instrument"].is_in(right["instrument"].unique().implode()).to_numpy()
    np.testing.assert_array_equal(got.covered, in_right)
