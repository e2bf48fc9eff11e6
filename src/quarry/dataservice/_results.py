"""Answers kept in memory, keyed by what was read and the commit it read, so that a hundred
readers of the same data cost one read and one encoding: concurrent requests for one key
share the first one's work (single flight: its answer, or its error, goes to everyone who
was waiting for it), and the least recently used answers go first when the bound is passed.
A new commit is a new key: nothing stale is served."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any

__all__ = ["ResultCache"]


class ResultCache:
    """Values up to ``max_bytes`` in all (``size`` tells a value's bytes); a value larger
    than that is shared with the readers waiting for it, then dropped."""

    def __init__(self, max_bytes: int, size: Callable[[Any], int]) -> None:
        self.max_bytes, self.size = max_bytes, size
        self._values: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._pending: dict[Hashable, Future[Any]] = {}
        self._lock = threading.Lock()
        self.used = 0
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value of ``key``, made by ``make()`` once for all who ask meanwhile."""
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                self._values.move_to_end(key)
                self.hits += 1
                return found[0]
            pending = self._pending.get(key)
            if pending is not None:
                self.hits += 1
            else:
                self.misses += 1
                mine: Future[Any] = Future()
                self._pending[key] = mine
        if pending is not None:
            return pending.result()  # its value, or its error raised here too
        try:
            value = make()
        except BaseException as exc:
            with self._lock:
                self._pending.pop(key, None)
            mine.set_exception(exc)
            raise
        with self._lock:
            self._pending.pop(key, None)
            self._keep(key, value)
        mine.set_result(value)
        return value

    def _keep(self, key: Hashable, value: Any) -> None:  # under the lock
        size = self.size(value)
        if size > self.max_bytes:
            return
        self._values[key] = (value, size)
        self.used += size
        while self.used > self.max_bytes:
            _, (_, freed) = self._values.popitem(last=False)
            self.used -= freed
