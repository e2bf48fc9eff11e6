"""The job service: manifests, a durable queue on SQLite or PostgreSQL, workers on execution
backends, the watchdog, and the REST API (``_api.create_app``).

- ``Manifest``: a job's YAML (resources, data, run, env, retries, timeout, priority,
  labels), strict; problems come with their field paths (``ManifestError.problems``).
- ``JobStore``: jobs and attempts, migrated by Alembic; atomic, capacity-aware claims
  (priority, then fair share across projects, then age), retries with backoff and more
  memory after an OOM, heartbeats and the stale attempts a watchdog must end; each
  project's variables (what its attempts may read; listed by name, never by value).
- ``Worker``: admits what fits its free capacity, runs attempts on a ``Backend`` (the local
  one: a subprocess with its cores pinned and its memory watched; ``RayBackend``: a Ray job
  per attempt, its memory enforced on the node, adopted by the next server after a restart),
  heartbeats, cancels.
- ``Watchdog``: ends attempts whose heartbeat stopped as ``lost``, so that they are retried
  (one on Ray as Ray says it ended, stopped first if it still runs there).
- Datasets (``DatasetInfo``, ``Identity``, ``refusal``): named stores with an owner and a
  visibility, the rules of who may read and write them (a job's own token: only what its
  manifest declared), and the audit log of their reads, in the same database.
- ``Client``: the REST API's client (the CLI's, the tests', other services'), with its
  errors (``JobServiceError`` and below, defined in ``quarry.exceptions`` with
  ``ManifestError`` and re-exported here).
"""

from quarry.exceptions import (
    AccessDenied,
    AuthenticationError,
    InvalidRequest,
    JobConflict,
    JobNotFound,
    JobServiceError,
    ManifestError,
    PermissionDenied,
    ServerUnreachable,
)
from quarry.jobs._backends import (
    BACKENDS,
    DEFAULT_PASS_ENV,
    Backend,
    Ended,
    Launch,
    LocalBackend,
    backend,
)
from quarry.jobs._client import Client
from quarry.jobs._datasets import DatasetInfo, Identity, refusal
from quarry.jobs._loops import LoopHealth
from quarry.jobs._manifest import (
    Manifest,
    Resources,
    check_capacity,
    load_manifest,
    manifest_from_dict,
    manifest_from_yaml,
    parse_duration,
    parse_memory,
    readable_memory,
)
from quarry.jobs._ray import RayBackend
from quarry.jobs._store import (
    DATA_TOKEN_VARIABLE,
    Claimed,
    JobStore,
    TokenInfo,
    VariableInfo,
    default_url,
    migrate,
)
from quarry.jobs._watchdog import Watchdog
from quarry.jobs._worker import Worker

__all__ = [
    "BACKENDS",
    "DATA_TOKEN_VARIABLE",
    "DEFAULT_PASS_ENV",
    "AccessDenied",
    "AuthenticationError",
    "Backend",
    "Claimed",
    "Client",
    "DatasetInfo",
    "Ended",
    "Identity",
    "InvalidRequest",
    "JobConflict",
    "JobNotFound",
    "JobServiceError",
    "JobStore",
    "Launch",
    "LocalBackend",
    "LoopHealth",
    "Manifest",
    "ManifestError",
    "PermissionDenied",
    "RayBackend",
    "Resources",
    "ServerUnreachable",
    "TokenInfo",
    "VariableInfo",
    "Watchdog",
    "Worker",
    "backend",
    "check_capacity",
    "default_url",
    "load_manifest",
    "manifest_from_dict",
    "manifest_from_yaml",
    "migrate",
    "parse_duration",
    "parse_memory",
    "readable_memory",
    "refusal",
]
