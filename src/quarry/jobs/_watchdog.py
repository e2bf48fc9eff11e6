"""The watchdog: no job stays "running" without a live process behind it.

A worker sends heartbeats only for attempts whose process it has just seen alive. When an
attempt's heartbeat is older than ``stale_after`` seconds, its process or its worker died
(a SIGKILL, an OOM kill of the worker, a crashed server): the watchdog ends the attempt as
``lost`` with that reason, and the store retries the job per its policy (``on: [lost]`` by
default) or fails it. A broker cannot tell a killed consumer from a slow one; a heartbeat
with a deadline can.
"""

from __future__ import annotations

import threading

from quarry.jobs._store import JobStore

__all__ = ["Watchdog"]


class Watchdog:
    def __init__(self, store: JobStore, *, stale_after: float = 5.0) -> None:
        self.store = store
        self.stale_after = stale_after

    def sweep(self) -> list[int]:
        """End every stale attempt as lost; their ids."""
        ended = self.store.stale(self.stale_after)
        for attempt_id in ended:
            self.store.finish(
                attempt_id, "lost",
                reason=f"no heartbeat for {self.stale_after:g} s: its process or worker died",
            )  # fmt: skip
        return ended

    def run(self, stop: threading.Event, *, every: float = 1.0) -> None:
        while not stop.is_set():
            self.sweep()
            stop.wait(every)
