"""Answers kept in memory, keyed by what was read and the commit it read, so that a hundred
readers of the same data cost one read and one encoding: concurrent requests for one key
wait for the first (single flight), and the least recently used answers go first when the
bound is passed. A new commit is a new key: nothing stale is served."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["ResultCache"]


class ResultCache:
    """Values up to ``max_bytes`` in all (``size`` tells a value's bytes)."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int]) -> None:
        self.max_bytes, self.size = max_bytes, size
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}
        self._lock = threading.Lock()
        self.used = 0
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value of ``key``, made by ``make()`` once however many ask at once."""
        while True:
            with self._lock:
                found = self._values.get(key)
                if found is not None:
                    self._values.move_to_end(key)
                    self.hits += 1
                    return found[0]
                waiting = self._pending.get(key)
                if waiting is None:
                    self._pending[key] = threading.Event()
                    self.misses += 1
                    break
            waiting.wait()  # the first asker's value, or its failure: then try ourselves
        try:
            value = make()
            self._put(key, value)
            return value
        finally:
            with self._lock:
                self._pending.pop(key).set()

    def _put(self, key: Hashable, value: Any) -> None:
        size = self.size(value)
        if size > self.max_bytes:
            return
        with self._lock:
            self._values[key] = (value, size)
            self.used += size
            while self.used > self.max_bytes:
                _, (_, freed) = self._values.popitem(last=False)
                self.used -= freed
