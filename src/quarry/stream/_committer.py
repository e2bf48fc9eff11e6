"""A processed bar stored, published and acknowledged on a thread of its own.

Storing a bar (its 16,000 scores are as many SQLite rows) and publishing its outputs took
about a fifth of a bar's time at 16,000 instruments, spent while the next bar waited. The
runner hands each processed bar here and goes on with the next one's features; bars are
committed one at a time, in order, and at most one waits behind the one committing, so the
runner is never more than two bars ahead of what is stored.

The order within a bar is the runner's contract and does not change: the bar is kept and
its outputs stored in one transaction, then published, then its messages acknowledged. A
kill -9 while a bar waits here leaves its messages unacknowledged: the broker delivers them
again, and the bar is processed again after the restart.

The committer writes through a SQLite connection of its own; in WAL mode the runner's reads
(a redelivered bar's record) see what is committed. After a failure nothing more is
committed (a later bar must not be published before an earlier one): the error is raised in
the runner at its next hand-over or when it stops.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from quarry.stream._outputs import OutputStore

__all__ = ["Committer"]

Job = Callable[[OutputStore], None]


class Committer:
    def __init__(self, folder: str | Path) -> None:
        self.store = OutputStore(folder)
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="stream-commit")
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Commit ``job`` after the bars handed over before it (waits while one already
        waits)."""
        self._raise()
        self._jobs.put(job)

    def check(self) -> None:
        """Raise the failure of a commit, if one failed (the runner asks on every pass, so a
        stream that can no longer commit stops at once instead of going on fetching)."""
        self._raise()

    def drain(self) -> None:
        """Wait until every bar handed over is committed (or one failed: raised here)."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Stop the thread once what was handed over is done, and close the connection."""
        self._jobs.put(None)
        self._thread.join()
        self.store.close()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:  # after a failure, nothing later goes out
                    job(self.store)
            except BaseException as e:  # handed to the runner's thread
                self._error = e
            finally:
                self._jobs.task_done()
