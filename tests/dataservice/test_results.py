"""The service's answers in memory: one read for all who ask at once, its error shared too,
the bound kept by dropping the least recently used."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from quarry.dataservice._results import ResultCache


def test_readers_asking_at_once_share_one_read() -> None:
    cache = ResultCache(1 << 20, size=lambda v: 10)
    calls = []
    gate = threading.Event()

    def read() -> str:
        calls.append(1)
        gate.wait(5)
        return "answer"

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(cache.get, "k", read) for _ in range(8)]
        time.sleep(0.2)
        gate.set()
        assert [f.result() for f in futures] == ["answer"] * 8
    assert len(calls) == 1 and (cache.misses, cache.hits) == (1, 7)


def test_a_failed_read_fails_its_waiters_once_and_is_tried_again_later() -> None:
    cache = ResultCache(1 << 20, size=lambda v: 10)
    calls = []
    gate = threading.Event()

    def broken() -> str:
        calls.append(1)
        gate.wait(5)
        raise OSError("the disk went away")

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(cache.get, "k", broken) for _ in range(4)]
        time.sleep(0.2)
        gate.set()
        for f in futures:
            with pytest.raises(OSError, match="the disk went away"):
                f.result()
    assert len(calls) == 1
    assert cache.get("k", lambda: "fixed") == "fixed"


def test_the_bound_drops_the_least_recently_used() -> None:
    cache = ResultCache(25, size=len)
    cache.get("a", lambda: "x" * 10)
    cache.get("b", lambda: "y" * 10)
    cache.get("a", lambda: "not read")  # a used again: b is now the oldest
    cache.get("c", lambda: "z" * 10)
    assert cache.used == 20
    assert cache.get("b", lambda: "read again") == "read again"
    assert cache.get("huge", lambda: "h" * 100) == "h" * 100  # answered, not kept
    assert cache.get("huge", lambda: "again") == "again"
