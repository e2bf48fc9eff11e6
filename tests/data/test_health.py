"""The health check against a pandas computation."""

from __future__ import annotations

from quarry.data import Store, check_health
from tests.data.helpers import seed_bars_with_problems


def test_health_counts_match_pandas(store: Store) -> None:
    frame = seed_bars_with_problems(store).to_pandas().sort_values(["instrument", "date"])
    report = {c.name: c for c in check_health(store).checks}
    g = frame.groupby("instrument")
    close_jumps = ((frame["close"] / g["close"].shift(1) - 1).abs() > 0.5).sum()
    vol_jumps = ((frame["volume"] / g["volume"].shift(1) - 1).abs() > 3.0).sum()
    # Up 70% into the spike counts; back down is a fall of 41%, under the threshold.
    assert report["close_jump"].count == close_jumps == 1
    assert {e["instrument"] for e in report["close_jump"].examples} == {"B"}
    assert report["volume_jump"].count == vol_jumps
    assert report["missing_volume"].count == int(frame["volume"].isna().sum()) == 1
    assert report["missing_factor"].count == int(frame["factor"].isna().sum()) == 40
    assert not check_health(store).ok
