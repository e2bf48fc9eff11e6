"""The feature cache: later runs reuse results; a correction recomputes exactly what it
affects, because the keys hold the commits the values were computed from."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

import quarry.data
from quarry.data import Store, generate, ingest_frame, read_bars, table_spec
from quarry.features import FeatureCache, materialize

FEATURES = {"MA5": "Mean($close, 5)/$close", "EPS": "$eps / $close", "R": "CSRank($close)"}
LABEL = "Ref($close, -2)/Ref($close, -1) - 1"


@pytest.fixture
def market(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    generate(store, 8, 120, seed=4)
    return store


def _run(
    store: Store, cache: FeatureCache | None, out: Path, **kw: object
) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """The features written, and which outputs were computed (not taken from the cache)."""
    done = materialize(store, FEATURES, out, label=LABEL, cache=cache, **kw)  # type: ignore[arg-type]
    return pl.read_parquet(out), done.computed


def test_a_cached_run_equals_an_uncached_one_and_reads_no_bars(
    market: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = FeatureCache(tmp_path / "cache")
    plain, _ = _run(market, None, tmp_path / "plain.parquet", start=date(2015, 3, 1))
    first, computed = _run(market, cache, tmp_path / "first.parquet", start=date(2015, 3, 1))
    assert first.equals(plain)
    assert set(computed) == {*FEATURES, "LABEL0"}

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a fully cached run read the bars")

    monkeypatch.setattr(quarry.data, "read_bars", no_reading)  # where materialize finds it
    again, computed = _run(market, cache, tmp_path / "again.parquet", start=date(2015, 3, 1))
    assert again.equals(plain)
    assert computed == ()


def test_a_new_expression_is_the_only_one_computed(market: Store, tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache")
    _run(market, cache, tmp_path / "a.parquet")
    done = materialize(
        market, {**FEATURES, "STD5": "Std($close, 5)"}, tmp_path / "b.parquet", cache=cache
    )
    assert done.computed == ("STD5",)
    reference = materialize(market, {"STD5": "Std($close, 5)"}, tmp_path / "c.parquet")
    assert reference.rows == done.rows
    got = pl.read_parquet(tmp_path / "b.parquet")
    assert got["STD5"].equals(pl.read_parquet(tmp_path / "c.parquet")["STD5"])


def test_a_bar_correction_recomputes_bar_features_and_old_as_of_still_hits(
    market: Store, tmp_path: Path
) -> None:
    cache = FeatureCache(tmp_path / "cache")
    known_then = max(c.committed_at for c in market.commits())
    before, _ = _run(market, cache, tmp_path / "before.parquet", as_of=known_then)
    row = read_bars(market, ["open", "high", "low", "close", "volume"]).filter(
        (pl.col("instrument") == "SYN00002") & (pl.col("date") == date(2015, 3, 10))
    )
    fixed = row.with_columns(pl.col("close") * 1.01, pl.col("high") * 1.01)
    ingest_frame(market, table_spec("bars"), fixed, source="vendor correction")

    after, computed = _run(market, cache, tmp_path / "after.parquet", as_of=None)
    assert set(computed) == {*FEATURES, "LABEL0"}
    assert after.equals(_run(market, None, tmp_path / "uncached.parquet")[0])
    assert not after.equals(before)  # the correction reached the features

    # As known before the correction, the entries computed then are still the answer.
    old, computed = _run(market, cache, tmp_path / "old.parquet", as_of=known_then)
    assert computed == ()
    assert old.equals(before)


def test_a_fundamentals_correction_recomputes_only_what_reads_them(
    market: Store, tmp_path: Path
) -> None:
    cache = FeatureCache(tmp_path / "cache")
    _run(market, cache, tmp_path / "a.parquet")
    restatement = pl.DataFrame(
        {
            "instrument": ["SYN00003"],
            "field": ["eps"],
            "period_end": [date(2015, 3, 31)],
            "knowledge_date": [date(2015, 5, 1)],
            "value": [9.99],
        }
    )
    ingest_frame(market, table_spec("fundamentals"), restatement, source="restatement")
    after, computed = _run(market, cache, tmp_path / "b.parquet")
    assert computed == ("EPS",)
    assert after.equals(_run(market, None, tmp_path / "c.parquet")[0])


def test_a_new_story_recomputes_only_the_text_features(tmp_path: Path) -> None:
    store = Store(tmp_path / "news")
    generate(store, 8, 120, seed=4, text_rate=0.5)
    features = {"MA5": "Mean($close, 5)/$close", "SENT": "Mean($news_sent, 3)",
                "N": "CSRank($news_count)"}  # fmt: skip
    cache = FeatureCache(tmp_path / "cache")
    materialize(store, features, tmp_path / "a.parquet", cache=cache)
    bars = read_bars(store, ["close"])
    first = bars.row(0, named=True)
    story = pl.DataFrame(
        {
            "event_id": ["late-news"],
            "delivered_at": [datetime(2015, 3, 2, 15, tzinfo=UTC)],
            "instruments": [first["instrument"]],
            "published_at": [datetime(2015, 3, 2, 14, tzinfo=UTC)],
            "kind": ["news"],
            "title": ["Record profits and strong gains"],
            "retracted": [False],
        }
    )
    ingest_frame(store, table_spec("events"), story, source="late news")
    done = materialize(store, features, tmp_path / "b.parquet", cache=cache)
    assert done.computed == ("SENT", "N")
    fresh = materialize(store, features, tmp_path / "c.parquet")
    assert pl.read_parquet(tmp_path / "b.parquet").equals(pl.read_parquet(tmp_path / "c.parquet"))
    assert not pl.read_parquet(tmp_path / "a.parquet").equals(
        pl.read_parquet(tmp_path / "b.parquet")
    )
    assert fresh.computed == tuple(features)


def test_a_new_word_list_recomputes_what_reads_its_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path / "news")
    generate(store, 8, 120, seed=4, text_rate=0.5)
    features = {"SENT": "$news_sent", "N": "$news_count", "V": "$news_sent_vader"}
    cache = FeatureCache(tmp_path / "cache")
    materialize(store, features, tmp_path / "a.parquet", cache=cache)
    from quarry.text import _lm

    monkeypatch.setattr(_lm, "RULE", _lm.RULE + 1)  # a new tokenising rule: a new version
    _lm.lexicon.cache_clear()
    try:
        done = materialize(store, features, tmp_path / "b.parquet", cache=cache)
    finally:
        _lm.lexicon.cache_clear()
    assert done.computed == ("SENT",)
