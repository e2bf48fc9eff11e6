"""Reads through the service equal the library's reads of the store itself: as of several
times (before and after the generated market's vendor corrections), a universe's spans,
adjusted prices, fundamentals, features; over HTTP (Arrow and Parquet) and Flight. The
read-through cache answers a read again from local disk while the commit is the same, and
never after a correction."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from quarry.data import ReadCache, Store, connect, read_bars, table_spec
from quarry.data._ingest import ingest_frame
from quarry.dataservice._app import etag
from quarry.features import FeatureCache, materialize
from quarry.features._tables import read_frame
from tests.dataservice.conftest import Service, raw_get

pytestmark = pytest.mark.service

CASES = [
    {"fields": ("close", "volume")},
    {"fields": ("open", "close"), "as_of": "2015-04-15"},
    {"fields": ("close",), "as_of": "2015-06-30T12:00:00", "start": "2015-03-01"},
    {"fields": ("close", "volume", "factor"), "adjust": "adjusted"},
    {"fields": ("close",), "universe": "large", "as_of": "2015-09-30"},
    {"fields": ("close", "eps"), "as_of": "2015-08-01", "adjust": "adjusted"},
    {"fields": ("close",), "instruments": ("SYN00003", "SYN00010"), "end": "2015-05-01"},
]


def _library(store: Path, case: dict[str, object]) -> pl.DataFrame:
    args = {k: v for k, v in case.items() if k not in ("fields", "instruments")}
    instruments = case.get("instruments")
    return read_bars(
        Store(store),
        list(case["fields"]),  # type: ignore[arg-type]
        instruments=list(instruments) if instruments else None,  # type: ignore[call-overload]
        **args,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_a_read_through_the_service_is_the_library_read(
    service: Service, case: dict[str, object], tmp_path: Path
) -> None:
    expected = _library(service.store, case)
    assert expected.height > 0
    token = service.tokens["bob"]
    over_http = connect(service.url, token, cache=ReadCache(tmp_path / "c")).bars("market", **case)  # type: ignore[arg-type]
    over_flight = connect(service.flight, token).bars("market", **case)  # type: ignore[arg-type]
    assert_frame_equal(over_http, expected)
    assert_frame_equal(over_flight, expected)


def test_the_corrections_are_seen_as_of_their_time(service: Service) -> None:
    """The generated market corrects some closes days later: a read as of before a
    correction sees the first value, after it the corrected one, through the service too."""
    store = Store(service.store)
    early = read_bars(store, ["close"], as_of="2015-03-08")
    late = read_bars(store, ["close"], end="2015-03-08")
    joined = early.join(late, on=["instrument", "date"], suffix="_late")
    assert (joined["close"] != joined["close_late"]).sum() == 1  # SYN00016 on 2015-03-03
    client = connect(service.url, service.tokens["bob"], cache=False)
    assert_frame_equal(client.bars("market", ["close"], as_of="2015-03-08"), early)
    assert_frame_equal(client.bars("market", ["close"], end="2015-03-08"), late)


def test_parquet_by_the_accept_header(service: Service) -> None:
    code, headers, body = raw_get(
        service.url + "/v1/datasets/market/bars?fields=close,volume&adjust=adjusted",
        service.tokens["bob"],
        {"Accept": "application/vnd.apache.parquet"},
    )
    assert code == 200 and headers["Content-Type"] == "application/vnd.apache.parquet"
    expected = read_bars(Store(service.store), ["close", "volume"], adjust="adjusted")
    assert_frame_equal(pl.read_parquet(io.BytesIO(body)), expected)
    assert int(headers["X-Quarry-Rows"]) == expected.height


def test_fundamentals_as_of_a_date(service: Service) -> None:
    expected = read_bars(Store(service.store), ["eps", "revenue_per_share"], as_of="2015-07-01")
    got = connect(service.url, service.tokens["bob"], cache=False).fundamentals(
        "market", ["eps", "revenue_per_share"], as_of="2015-07-01"
    )
    assert_frame_equal(got, expected)
    assert got["eps"].drop_nulls().len() > 0


def test_features_by_expression_and_set(service: Service, tmp_path: Path) -> None:
    exprs = {
        "Mean($close, 5)/$close": "Mean($close, 5)/$close",
        "Corr($close, $volume, 10)": "Corr($close, $volume, 10)",
    }
    path = tmp_path / "f.arrow"
    materialize(Store(service.store), exprs, path, as_of="2015-10-01", cache=FeatureCache(tmp_path))
    expected = read_frame([path])
    client = connect(service.url, service.tokens["bob"], cache=False)
    got = client.features("market", exprs=list(exprs), as_of="2015-10-01")
    assert_frame_equal(got, expected)
    alpha = client.features(
        "market", feature_set="alpha158", start="2015-09-01", instruments=["SYN00001"]
    )
    assert alpha.width == 2 + 158 and alpha["instrument"].unique().to_list() == ["SYN00001"]


def test_bad_parameters_are_one_line_422s(service: Service) -> None:
    token = service.tokens["bob"]
    for query, words in [
        ("bars?fields=close&colour=red", "colour: not a parameter of a bars read"),
        ("bars?adjust=half", "adjust 'half': choose raw or adjusted"),
        ("bars?as_of=yesterday", "as_of 'yesterday': write a date"),
        ("features?start=2015-01-01", "give set=alpha158"),
        ("bars?fields=close,colour", "unknown field 'colour'"),
        ("trades", "'trades': read one of bars, features, fundamentals"),
    ]:
        code, _, body = raw_get(f"{service.url}/v1/datasets/market/{query}", token)
        assert code == 422, query
        assert words in body.decode(), (query, body)


def test_the_cache_answers_again_until_a_correction(service: Service, tmp_path: Path) -> None:
    """A second read is a 304 answered from disk; a vendor correction changes the commit, and
    the next read fetches the corrected data."""
    copy = tmp_path / "store"
    shutil.copytree(service.store, copy)
    service.jobs.add_dataset("copy", str(copy), owner="ann", project="alpha", visibility="public")
    cache = ReadCache(tmp_path / "cache")
    client = connect(service.url, service.tokens["bob"], cache=cache)
    first = client.bars("copy", ["close"])
    again = client.bars("copy", ["close"])
    assert_frame_equal(first, again)
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)
    assert stats.hit_bytes == stats.miss_bytes > 0
    # a vendor correction of one close
    row = read_bars(Store(copy), ["open", "high", "low", "close", "volume"]).row(0, named=True)
    fixed = pl.DataFrame([{**row, "close": row["close"] * 1.01, "high": row["high"] * 1.02}])
    ingest_frame(Store(copy), table_spec("bars"), fixed)
    after = client.bars("copy", ["close"])
    assert_frame_equal(after, read_bars(Store(copy), ["close"]))
    assert after["close"][0] == pytest.approx(row["close"] * 1.01)
    assert cache.stats().misses == 2
    # what the owner sees: two fetches and one read from the reader's cache
    routes = [
        r["route"] for r in connect(service.url, service.tokens["ann"], cache=False).audit("copy")
    ]
    assert routes == ["bars", "bars (reader's cache)", "bars"]


def test_the_cache_keeps_its_bound_least_recently_used_first(tmp_path: Path) -> None:
    answer = pa.table({"x": np.arange(1000)})
    probe = ReadCache(tmp_path / "probe")
    probe.miss("p", "d", "c1", answer)
    one = probe.stats().size  # an entry's bytes on disk
    cache = ReadCache(tmp_path / "c", max_bytes=int(2.5 * one))
    for k in range(3):
        cache.miss(f"k{k}", "d", "c1", answer)
        if k == 1:
            cache.hit("k0", one)  # k0 used after k1: k1 is the least recently used
    assert cache.lookup("k1") is None
    k0 = cache.lookup("k0")
    assert k0 is not None and cache.lookup("k2") is not None
    assert cache.stats().size == 2 * one
    assert k0.read().equals(answer)
    # a new commit of one key replaces its answer and its file
    cache.miss("k0", "d", "c2", answer.slice(0, 10))
    again = cache.lookup("k0")
    assert again is not None and again.commit == "c2" and again.read().num_rows == 10
    assert not k0.path.exists()


def test_readers_of_one_machine_share_its_cache_at_once(service: Service, tmp_path: Path) -> None:
    """Threads reading the same bars together into one cache (as jobs on one machine do):
    every one gets the answer, and the cache keeps one entry."""
    from concurrent.futures import ThreadPoolExecutor

    cache = ReadCache(tmp_path / "cache")
    client = connect(service.url, service.tokens["bob"], cache=cache)
    with ThreadPoolExecutor(8) as pool:
        frames = list(pool.map(lambda _: client.bars("market", ["close"]), range(8)))
    expected = read_bars(Store(service.store), ["close"])
    for frame in frames:
        assert_frame_equal(frame, expected)
    assert cache.stats().entries == 1
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    # the entry's file holds the answer of the commit its row names
    (entry,) = [cache.lookup(k) for k in [cache.key(service.url, "market",
                                                   "bars?adjust=raw&fields=close")]]  # fmt: skip
    assert entry is not None
    commit = service.stack.service.catalog.commit(service.jobs.dataset("market"))
    assert entry.commit == etag(commit)
    assert_frame_equal(pl.from_arrow(entry.read()), expected)  # type: ignore[arg-type]
