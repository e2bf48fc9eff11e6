"""Token lookups for the services that share the job database's tokens (the model API, the
data API): each accepted token trusted for a moment, so a busy client does not cost a
database read per request."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio.to_thread

__all__ = ["TokenCache"]

T = TypeVar("T")


class TokenCache(Generic[T]):
    """Tokens looked up by ``lookup`` (in the job database), each accepted one trusted for
    ``ttl`` seconds (a busy client would otherwise cost a database read per request).
    Unknown tokens are not remembered: a new token works at once.

    Used on the event loop. A token is asked of the database (in a thread) once at a time,
    however many requests carry it: when the trust ran out under load, every request in
    flight asked at once, and their reads held the server for a third of a second. A token
    in use is asked again in the background once half its time has passed, so a busy
    client never waits for the database; an answer is never used past ``ttl``."""

    def __init__(self, lookup: Callable[[str], T | None], ttl: float) -> None:
        self.lookup, self.ttl = lookup, ttl
        self._seen: dict[str, tuple[float, T]] = {}
        # by event loop too: a read left behind by a loop that has ended is not awaited
        self._asking: dict[tuple[int, str], asyncio.Future[T | None]] = {}

    async def caller(self, token: str) -> T | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        hit = self._seen.get(key)
        age = time.monotonic() - hit[0] if hit is not None else None
        if hit is not None and age is not None and age < self.ttl:
            if age > self.ttl / 2:
                self._ask(key, token)  # in the background: this answer is still good
            return hit[1]
        return await asyncio.shield(self._ask(key, token))

    def _ask(self, key: str, token: str) -> asyncio.Future[T | None]:
        slot = (id(asyncio.get_running_loop()), key)
        asking = self._asking.get(slot)
        if asking is None:
            asking = asyncio.ensure_future(self._read(slot, token))
            self._asking[slot] = asking
            # an answer nobody awaits (a background one) must not warn when it failed
            asking.add_done_callback(lambda f: f.cancelled() or f.exception())
        return asking

    async def _read(self, slot: tuple[int, str], token: str) -> T | None:
        key = slot[1]
        asked = time.monotonic()  # trusted from the question, not the answer: at most ttl
        try:
            found = await anyio.to_thread.run_sync(self.lookup, token)
        finally:
            self._asking.pop(slot, None)
        if found is None:
            self._seen.pop(key, None)  # revoked: at once
        elif self.ttl > 0:
            if len(self._seen) > 10_000:  # a bound; entries are cheap to make again
                self._seen.clear()
            self._seen[key] = (asked, found)
        return found
