"""The embedding scorer's head is fitted walk-forward: a story's score comes from a head
trained only on what was known before its window, so later data cannot change it."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quarry.data import Store, generate, ingest_frame, read_bars, table_spec
from quarry.models._text_head import fit_text_head


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    s = Store(tmp_path_factory.mktemp("head") / "store")
    generate(s, 120, 360, seed=3, text_rate=0.5, text_ic=0.1)
    return s


def test_later_data_does_not_change_earlier_scores(tmp_path: Path) -> None:
    s = Store(tmp_path / "store")
    generate(s, 120, 360, seed=3, text_rate=0.5, text_ic=0.1)
    before = fit_text_head(s, step=40, min_train_days=120)
    # a vendor rewrites every price from a day on (a correction known later)
    cut = date(2015, 12, 1)
    bars = read_bars(s, ["open", "high", "low", "close", "volume", "vwap", "factor"])
    later = bars.filter(pl.col("date") >= cut)
    rng = np.random.default_rng(0)
    f = pl.Series(rng.uniform(0.8, 1.2, later.height))
    moved = later.with_columns(pl.col(c) * f for c in ("open", "high", "low", "close", "vwap"))
    ingest_frame(s, table_spec("bars"), moved, knowledge_time="2026-01-01")
    after = fit_text_head(s, step=40, min_train_days=120)
    both = before.scores.join(after.scores, on=["event_id", "delivered_at"], suffix="_after")
    both = both.filter(pl.col("score").is_not_null())
    early = both.filter(pl.col("delivered_at") < pl.datetime(2015, 11, 25, time_zone="UTC"))
    late = both.filter(pl.col("delivered_at") > pl.datetime(2016, 3, 1, time_zone="UTC"))
    assert early.height > 1000 and late.height > 1000
    # scored by heads fitted on labels known before their window: untouched
    np.testing.assert_allclose(early["score"].to_numpy(), early["score_after"].to_numpy(),
                               rtol=1e-9, atol=1e-12)  # fmt: skip
    # the rewrite reached the heads fitted after it (the check bites)
    moved_by = np.abs(late["score"].to_numpy() - late["score_after"].to_numpy())
    assert np.median(moved_by) > 1e-3


def test_stories_before_the_first_head_have_no_score(store: Store) -> None:
    head = fit_text_head(store, step=40, min_train_days=120)
    days = read_bars(store, ["close"])["date"].unique().sort()
    first_window = days[120 + 2]  # min_train_days, then the label's two days
    scored = head.scores.filter(pl.col("score").is_not_null())
    assert head.scores.filter(pl.col("score").is_null()).height > 0
    # a story counting before the first window has no score; every other one has
    assert scored["delivered_at"].min().date() >= first_window - timedelta(days=4)
    assert scored.height > 0.5 * head.scores.height
    assert head.oos_rank_ic > 0.03  # the planted tone, found by the head out of sample


def test_a_store_without_stories_is_refused(tmp_path: Path) -> None:
    from quarry.exceptions import DataError

    s = Store(tmp_path / "bare")
    generate(s, 10, 40, seed=1)
    with pytest.raises(DataError, match="no stories to score"):
        fit_text_head(s)
