"""``backup``: the job database, the tracking store (its database and artifact folder) and a
data store, copied consistently to ``s3://BUCKET/PREFIX/<id>/`` while the services run;
``backup_every`` repeats it on a schedule.

Each part goes to its own folder of the backup (``jobs/``, ``tracking/``, ``artifacts/``,
``store/``), and ``manifest.json`` is written last: a backup without it is incomplete.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from quarry.admin._databases import Database, parse_database
from quarry.admin._manifest import MANIFEST, Manifest, Part, backup_id
from quarry.admin._s3 import FileEntry, Remote, open_remote
from quarry.exceptions import DataError, QuarryError

__all__ = ["Progress", "backup", "backup_every", "default_artifacts", "default_tracking"]

# (part, files done, files in all): what a progress bar shows
Progress = Callable[[str, int, int], None]
_THREADS = 8  # files in flight at once: S3 answers each in milliseconds, not microseconds


def default_tracking() -> str:
    """The tracking store's URI: ``$QUARRY_TRACKING_URI``, else SQLite under
    ``$QUARRY_HOME``."""
    from quarry.tracking import tracking_uri

    return tracking_uri()


def default_artifacts() -> str | None:
    """Where the tracking store keeps new experiments' artifacts (a URI), or None when a
    tracking server decides."""
    from quarry.settings import quarry_home
    from quarry.tracking._mlflow import _artifact_root

    try:
        return _artifact_root()
    except ValueError:  # a relative QUARRY_HOME: no file URI; the folder is still the same
        return (quarry_home().resolve() / "mlartifacts").as_uri()


def local_folder(uri: str) -> Path | None:
    """The local folder of a ``file://`` URI or a plain path; None for anything remote."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(url2pathname(parts.path))
    if parts.scheme == "" or len(parts.scheme) == 1:  # a path (or a Windows drive)
        return Path(uri)
    return None


def _copy_files(
    remote: Remote,
    name: str,
    source_fs: Any,
    files: Sequence[tuple[str, str]],
    progress: Progress | None,
    done: list[FileEntry],
) -> None:
    """Upload ``files`` ((source path, path in the backup)) a few at a time."""
    if not files:
        return
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        futures = [pool.submit(remote.upload, source_fs, src, rel) for src, rel in files]
        for future in as_completed(futures):
            done.append(future.result())
            if progress is not None:
                progress(name, len(done), len(files))


def _database_part(
    name: str, db: Database, remote: Remote, progress: Progress | None
) -> tuple[FileEntry, ...]:
    from pyarrow import fs

    # a SQLite copy is made beside the database (its disk has room for it) when that folder
    # is writable, a dump in the temporary folder
    beside = db.path.parent if db.path is not None else None
    where = beside if beside is not None and os.access(beside, os.W_OK) else None
    done: list[FileEntry] = []
    with tempfile.TemporaryDirectory(prefix=".quarry-backup-", dir=where) as tmp:
        copy = Path(tmp) / f"{name}{db.suffix}"
        db.dump(copy)
        kept = f"{name}/{'jobs' if name == 'jobs' else 'mlflow'}{db.suffix}"
        _copy_files(remote, name, fs.LocalFileSystem(), [(str(copy), kept)], progress, done)
    return tuple(done)


def _unused_id(base: Remote) -> tuple[str, datetime]:
    """An id no backup under ``base`` has (the next second's, if this one's is taken)."""
    while True:
        started = datetime.now(UTC)
        name = backup_id(started)
        if not base.names(name):
            return name, started
        time.sleep(1.0 - started.microsecond / 1e6 + 0.01)


def backup(
    to: str,
    *,
    db: str | None = None,
    store: str | os.PathLike[str] | None = None,
    tracking: str | None = None,
    artifacts: str | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Back up the job database, the tracking store and a data store to ``to``.

    Parameters
    ----------
    to
        ``s3://BUCKET/PREFIX``; the backup goes to ``PREFIX/<UTC start, 20261203T101500Z>/``.
        Endpoint and keys: the ``AWS_*`` variables (``AWS_ENDPOINT_URL``,
        ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``).
    db
        The job database's URL (``sqlite:///PATH`` or ``postgresql://...``); by default
        ``$QUARRY_DB``, else ``$QUARRY_HOME/jobs.db``, skipped when that file does not exist.
    store
        A data store (directory or ``s3://``), copied as a consistent commit of each table;
        none by default.
    tracking, artifacts
        The tracking store's URI and its artifact folder's; by default Quarry's own
        (``$QUARRY_TRACKING_URI``, else ``$QUARRY_HOME/mlflow.db`` and
        ``$QUARRY_HOME/mlartifacts``), skipped when that database does not exist.
    progress
        Called with (part, files done, files of the part) as files are copied.

    Returns
    -------
    Manifest
        What was copied, as written to the backup's ``manifest.json``.

    Raises
    ------
    UsageError, DataError
        A bad URL, an unreachable endpoint, a missing bucket, database or store: one line.

    Examples
    --------
    >>> backup("s3://backups/quarry", store="/srv/store")  # doctest: +SKIP
    """
    from quarry import __version__
    from quarry.jobs._store import default_url
    from quarry.tracking import TRACKING_ENV

    base = open_remote(to, "--to")
    base.check()
    parts: list[Part] = []
    skipped: dict[str, str] = {}
    jobs_db = parse_database(db or default_url(), "--db")
    tracking_db: Database | None = None
    tracking_uri = tracking or default_tracking()
    if tracking_uri.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "postgres"):
        tracking_db = parse_database(tracking_uri, "the tracking URI")
    else:
        skipped["tracking"] = (
            f"{tracking_uri} is a tracking server: back up its own database and artifact store"
        )
    # what was not asked for by name and is not there is left out; a database named is required
    explicit_jobs = db is not None or bool(os.environ.get("QUARRY_DB"))
    if not jobs_db.exists():
        if explicit_jobs:
            raise DataError(f"--db {db or jobs_db.url}: no such SQLite database; check the path")
        skipped["jobs"] = f"no job database at {jobs_db.path}"
    if tracking_db is not None and not tracking_db.exists():
        if tracking is not None or os.environ.get(TRACKING_ENV):
            raise DataError(f"tracking database {tracking_db.url}: no such file")
        skipped["tracking"] = f"no tracking database at {tracking_db.path}"
        tracking_db = None
    snapshot = None
    if store is not None:
        from quarry.admin._delta import snapshot_store

        snapshot = snapshot_store(store)  # early: a wrong --store fails before any copy
    if "jobs" in skipped and tracking_db is None and snapshot is None:
        raise DataError(
            f"nothing to back up: {skipped['jobs']}, {skipped['tracking']}, and no "
            "--store; check --home (QUARRY_HOME), --db and --store"
        )

    name, started = _unused_id(base)
    remote = base.child(name)
    if "jobs" not in skipped:
        files = _database_part("jobs", jobs_db, remote, progress)
        parts.append(Part("jobs", jobs_db.kind, jobs_db.shown, files))
    if tracking_db is not None:
        root = artifacts if artifacts is not None else default_artifacts()
        files = _database_part("tracking", tracking_db, remote, progress)
        parts.append(
            Part("tracking", tracking_db.kind, tracking_db.shown, files, artifact_root=root)
        )
        # after the database: every artifact of a run it holds is on disk by now
        parts.extend(_artifacts_part(root, remote, progress, skipped))
    if snapshot is not None:
        parts.append(_store_part(snapshot, remote, progress))
    manifest = Manifest(
        name, remote.uri, __version__, started, datetime.now(UTC), tuple(parts), skipped
    )
    from quarry._json import dumps

    remote.write_bytes(MANIFEST, dumps(manifest.as_dict(), indent=2).encode())
    return manifest


def _artifacts_part(
    root: str | None, remote: Remote, progress: Progress | None, skipped: dict[str, str]
) -> list[Part]:
    from pyarrow import fs

    folder = local_folder(root) if root else None
    if folder is None:
        skipped["artifacts"] = f"artifacts at {root or 'the tracking server'}: back them up there"
        return []
    folder = folder.resolve()
    paths = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    done: list[FileEntry] = []
    files = [(str(p), f"artifacts/{p.relative_to(folder).as_posix()}") for p in paths]
    _copy_files(remote, "artifacts", fs.LocalFileSystem(), files, progress, done)
    assert root is not None
    return [Part("artifacts", "files", root, tuple(sorted(done, key=lambda f: f.path)))]


def _store_part(snapshot: Any, remote: Remote, progress: Progress | None) -> Part:
    done: list[FileEntry] = []
    total = len(snapshot.data) + len(snapshot.log)

    def tick(_name: str, _done: int, _total: int) -> None:
        if progress is not None:
            progress("store", len(done), total)

    # data files first, then the log entries that make them visible
    data = [(snapshot.path(rel), f"store/{rel}") for rel, _ in snapshot.data]
    log = [(snapshot.path(rel), f"store/{rel}") for rel, _ in snapshot.log]
    _copy_files(remote, "store", snapshot.fs, data, tick, done)
    _copy_files(remote, "store", snapshot.fs, log, tick, done)
    return Part(
        "store",
        "delta",
        snapshot.uri,
        tuple(sorted(done, key=lambda f: f.path)),
        versions=dict(snapshot.versions),
    )


def backup_every(
    to: str,
    every: float,
    *,
    stop: threading.Event,
    on_backup: Callable[[Manifest], None],
    on_error: Callable[[QuarryError], None],
    **options: Any,
) -> int:
    """``backup(to, **options)`` now and then every ``every`` seconds (from the start of
    one to the start of the next; a backup that overruns its slot starts the next at once)
    until ``stop`` is set; the number of backups made.

    The first backup's error is raised (a wrong bucket or path should stop the schedule at
    once); a later one goes to ``on_error`` and the schedule goes on.
    """
    made = attempts = 0
    due = time.monotonic()
    while not stop.is_set():
        attempts += 1
        try:
            manifest = backup(to, **options)
        except QuarryError as exc:
            if attempts == 1:
                raise
            on_error(exc)
        else:
            made += 1
            on_backup(manifest)
        due += every
        now = time.monotonic()
        if due < now:
            due = now
        stop.wait(due - now)
    return made
