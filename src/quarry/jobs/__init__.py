"""The job service: manifests, a durable queue on SQLite or PostgreSQL, and (to come) the
scheduler, the local execution backend, the watchdog, the REST API and the CLI.

- ``JobStore``: jobs and attempts, migrated by Alembic; atomic, capacity-aware claims
  (priority, then fair share across projects, then age), retries with backoff and more
  memory after an OOM, heartbeats and the stale attempts a watchdog must end.
"""

from quarry.jobs._store import Claimed, JobStore, default_url, migrate

__all__ = ["Claimed", "JobStore", "default_url", "migrate"]
