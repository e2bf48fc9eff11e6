"""Reading bars: adjustment errors, and the dense panel against a pandas pivot."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from quarry.data import Store, ingest_frame, read_bars, table_spec, to_panel
from quarry.exceptions import DataError
from tests.data.helpers import seed_bars_with_problems
from tests.helpers import bars_frame


def test_dividend_above_the_price_is_a_clear_error(store: Store) -> None:
    ingest_frame(
        store,
        table_spec("bars"),
        bars_frame([("A", "2020-01-02", 10.0), ("A", "2020-01-03", 9.0)]),
        knowledge_time="2020-02-01",
    )
    actions = pl.DataFrame(
        {
            "instrument": ["A"],
            "ex_date": [date(2020, 1, 3)],
            "kind": ["dividend"],
            "ratio": [None],
            "amount": [12.0],
        },
        schema_overrides={"ratio": pl.Float64},
    )
    ingest_frame(store, table_spec("corporate_actions"), actions, knowledge_time="2020-02-01")
    with pytest.raises(
        DataError, match=r"dividend 12\.0 of A on 2020-01-03 is not below the previous close 10\.0"
    ):
        read_bars(store, ["close"], adjust="adjusted")


def test_panel_matches_a_pandas_pivot(store: Store) -> None:
    seed_bars_with_problems(store)
    # Drop some rows so the panel has holes to fill with NaN.
    long = read_bars(store, ["close", "volume"]).filter(
        ~((pl.col("instrument") == "B") & (pl.col("date") < date(2020, 1, 10)))
    )
    panel = to_panel(long)
    pivot = long.to_pandas().pivot(index="date", columns="instrument", values="close")
    np.testing.assert_array_equal(panel["close"], pivot.to_numpy())
    assert panel.instruments == list(pivot.columns)
    assert list(panel.dates.astype("datetime64[D]")) == [np.datetime64(d, "D") for d in pivot.index]
