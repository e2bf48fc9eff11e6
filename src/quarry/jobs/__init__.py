"""The job service: manifests, a durable queue on SQLite or PostgreSQL, workers on execution
backends, and the watchdog; the REST API and the CLI are still to come.

- ``JobStore``: jobs and attempts, migrated by Alembic; atomic, capacity-aware claims
  (priority, then fair share across projects, then age), retries with backoff and more
  memory after an OOM, heartbeats and the stale attempts a watchdog must end.
- ``Worker``: admits what fits its free capacity, runs attempts on a ``Backend`` (the local
  one: a subprocess with its cores pinned and its memory watched), heartbeats, cancels.
- ``Watchdog``: ends attempts whose heartbeat stopped as ``lost``, so that they are retried.
"""

from quarry.jobs._backends import BACKENDS, Backend, Ended, LocalBackend, backend
from quarry.jobs._store import Claimed, JobStore, default_url, migrate
from quarry.jobs._watchdog import Watchdog
from quarry.jobs._worker import Worker

__all__ = ["BACKENDS", "Backend", "Claimed", "Ended", "JobStore", "LocalBackend", "Watchdog",
           "Worker", "backend", "default_url", "migrate"]  # fmt: skip
