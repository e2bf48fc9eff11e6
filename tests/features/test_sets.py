"""Alpha158 and Alpha360: Qlib's names and formulas, computable on the store's bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quarry.data import Store, generate, read_bars
from quarry.features import DEFAULT_LABEL, alpha158, alpha360, compute, parse

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "alpha158.tsv"


@pytest.mark.skipif(
    not REFERENCE.exists(), reason="the shared reference list is not beside the repo"
)
def test_alpha158_matches_the_reference_list() -> None:
    rows = [line.split("\t") for line in REFERENCE.read_text().strip().splitlines()]
    ours = alpha158()
    assert list(ours) == [name for name, _ in rows]
    for name, formula in rows:
        assert parse(ours[name]) == parse(formula), name


def test_alpha360_shape() -> None:
    names = list(alpha360())
    assert len(names) == 360 and names[:2] == ["CLOSE59", "CLOSE58"] and names[-1] == "VOLUME0"


@pytest.mark.slow
def test_alpha158_on_generated_bars(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    generate(store, 20, 120, seed=3)
    bars = read_bars(store, ["open", "high", "low", "close", "volume", "vwap"], adjust="adjusted")
    out = compute(bars, alpha158(), label=DEFAULT_LABEL)
    assert out.columns == ["instrument", "date", *alpha158(), "LABEL0"]
    assert out.height == bars.height
    # Spot checks against plain numpy on one instrument.
    one = bars.filter(pl.col("instrument") == "SYN00002")
    got = out.filter(pl.col("instrument") == "SYN00002")
    c = one["close"].to_numpy()
    np.testing.assert_allclose(got["ROC5"].to_numpy()[5:], c[:-5] / c[5:])
    np.testing.assert_allclose(
        got["KMID"].to_numpy(), (c - one["open"].to_numpy()) / one["open"].to_numpy()
    )
    ma5 = np.array([c[max(0, i - 4) : i + 1].mean() for i in range(len(c))])
    np.testing.assert_allclose(got["MA5"].to_numpy(), ma5 / c)
    label = c[2:] / c[1:-1] - 1
    np.testing.assert_allclose(got["LABEL0"].to_numpy()[:-2], label)
    assert (
        got["LABEL0"].to_numpy()[-2:].tolist() == [None, None]
        or np.isnan(got["LABEL0"].to_numpy()[-2:]).all()
    )
