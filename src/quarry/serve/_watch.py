"""The alias watcher: the background loop that follows the registry's aliases.

Every ``every`` seconds it asks the registry where each served model's alias points; a moved
alias is loaded in this thread, away from the requests, and then switched to
(``Catalog.refresh``). A pass that fails (the tracking store away for a moment) is logged and
counted, and the loop goes on: the versions already served keep answering.
"""

from __future__ import annotations

import threading

from quarry.jobs._loops import LoopHealth, run_loop
from quarry.serve._catalog import Catalog

__all__ = ["AliasWatcher"]


class AliasWatcher:
    """Runs ``catalog.refresh`` every ``every`` seconds until stopped."""

    def __init__(self, catalog: Catalog, *, every: float = 1.0) -> None:
        if not every > 0:
            raise ValueError(f"every={every}: give a number of seconds above 0")
        self.catalog, self.every = catalog, every
        self.health = LoopHealth("alias watcher", every=every)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=run_loop, args=(self.health, self.catalog.refresh, self._stop),
            kwargs={"every": self.every}, name="alias-watcher", daemon=True,
        )  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
