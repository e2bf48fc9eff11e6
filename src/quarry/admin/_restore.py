"""``restore``: a complete backup brought back into an empty place; ``list_backups``.

Every target is checked first (an existing SQLite file, a database with tables, a folder
with files in it: refused, naming it), then every file is downloaded beside its target and
checked against the manifest's size and SHA-256, and only then is anything put in place:
a damaged backup restores nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from quarry.admin._backup import Progress, default_artifacts, default_tracking, local_folder
from quarry.admin._databases import Database, parse_database
from quarry.admin._manifest import ID_PATTERN, MANIFEST, Manifest, id_time
from quarry.admin._s3 import FileEntry, Remote, open_remote
from quarry.exceptions import DataError, UsageError

__all__ = ["BackupInfo", "Restored", "list_backups", "restore"]

_THREADS = 8


@dataclass(frozen=True)
class BackupInfo:
    """A backup found under a prefix: complete only if its ``manifest.json`` is there
    (``finished_at`` and ``parts`` then come from it); ``files`` and ``bytes`` count what is
    stored, manifest included."""

    id: str
    uri: str
    started_at: datetime
    finished_at: datetime | None
    files: int
    bytes: int
    complete: bool
    parts: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "uri": self.uri,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "files": self.files,
            "bytes": self.bytes,
            "complete": self.complete,
            "parts": list(self.parts),
        }


@dataclass(frozen=True)
class Restored:
    """What ``restore`` did: the backup's manifest, where each part went, and how many of
    MLflow's artifact locations it moved to the new artifact folder."""

    manifest: Manifest
    targets: dict[str, str] = field(default_factory=dict)
    rebased: int = 0

    def as_dict(self) -> dict[str, object]:
        m = self.manifest
        return {
            "id": m.id,
            "from": m.uri,
            "targets": dict(self.targets),
            "files": m.files,
            "bytes": m.bytes,
            "rebased_artifact_locations": self.rebased,
            "job_db": m.job_db,
            "store_versions": m.store_versions,
        }


def list_backups(source: str) -> list[BackupInfo]:
    """The backups under ``s3://BUCKET/PREFIX``, oldest first, complete or not."""
    base = open_remote(source, "--from")
    base.check()
    groups: dict[str, list[tuple[str, int]]] = {}
    for rel, size in base.files():
        head, _, rest = rel.partition("/")
        if ID_PATTERN.fullmatch(head) and rest:
            groups.setdefault(head, []).append((rest, size))
    found = []
    for name, files in sorted(groups.items()):
        complete = any(rel == MANIFEST for rel, _ in files)
        started, finished = id_time(name), None
        parts: tuple[str, ...] = ()
        if complete:
            manifest = _read_manifest(base.child(name))
            started, finished = manifest.started_at, manifest.finished_at
            parts = tuple(p.name for p in manifest.parts)
        found.append(
            BackupInfo(
                name,
                base.child(name).uri,
                started,
                finished,
                len(files),
                sum(s for _, s in files),
                complete,
                parts,
            )
        )
    return found


def _read_manifest(remote: Remote) -> Manifest:
    where = f"{remote.uri}/{MANIFEST}"
    try:
        data = json.loads(remote.read_bytes(MANIFEST))
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not JSON ({exc}); restore another backup") from None
    manifest = Manifest.from_dict(data, where)
    # the uri the backup was written to may differ from where it is read now (a copied bucket)
    return Manifest(
        manifest.id,
        remote.uri,
        manifest.quarry_version,
        manifest.started_at,
        manifest.finished_at,
        manifest.parts,
        manifest.skipped,
    )


def _find(source: str) -> tuple[Remote, Manifest]:
    """The backup ``source`` names (``.../<id>``), or the newest complete one under it."""
    base = open_remote(source, "--from")
    base.check()
    last = base.prefix.rsplit("/", 1)[-1]
    if ID_PATTERN.fullmatch(last):
        parent = base.uri.rsplit("/", 1)[0]
        if not base.names():
            raise DataError(f"no backup at {base.uri}: see quarry admin backups --from {parent}")
        if base.size(MANIFEST) is None:
            raise DataError(
                f"{base.uri} has no {MANIFEST}: the backup is incomplete (it was "
                "interrupted) and cannot be restored; restore another one (quarry "
                f"admin backups --from {parent})"
            )
        return base, _read_manifest(base)
    backups = list_backups(source)
    complete = [b for b in backups if b.complete]
    if not complete:
        what = f"only {len(backups)} incomplete ones" if backups else "none"
        raise DataError(
            f"no complete backup under {base.uri} ({what}): make one with quarry "
            f"admin backup --to {base.uri}"
        )
    remote = base.child(complete[-1].id)
    return remote, _read_manifest(remote)


@dataclass
class _Plan:
    """Where each part goes, and where its files wait (beside it) until all are checked."""

    downloads: list[tuple[FileEntry, Path]] = field(default_factory=list)
    moves: list[tuple[Path, Path]] = field(default_factory=list)  # staged -> final
    loads: list[tuple[Database, Path]] = field(default_factory=list)  # PostgreSQL dumps
    cleanup: list[Path] = field(default_factory=list)
    targets: dict[str, str] = field(default_factory=dict)


def _empty_folder(path: Path, fix: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path} is not empty: restore into an empty place; {fix}")


def _stage_folder(final: Path, backup: str, plan: _Plan) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    # made as mkdir makes folders (the umask's mode), not 0700 as mkdtemp does
    staged = final.parent / f".{final.name}.restoring-{backup}-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    plan.cleanup.append(staged)
    plan.moves.append((staged, final))
    return staged


def _plan_database(name: str, db: Database, manifest: Manifest, plan: _Plan) -> Database:
    part = manifest.part(name)
    assert part is not None and len(part.files) == 1
    (entry,) = part.files
    if db.kind == "sqlite":
        assert db.path is not None
        db.path.parent.mkdir(parents=True, exist_ok=True)
        staged = db.path.parent / f".{db.path.name}.restoring-{manifest.id}"
        plan.cleanup.append(staged)
        plan.moves.append((staged, db.path))
        plan.downloads.append((entry, staged))
        plan.targets[name] = f"sqlite:///{db.path.resolve()}"
        return Database(db.url, "sqlite", path=staged)  # what to rebase before the move
    folder = Path(tempfile.mkdtemp(prefix="quarry-restore-"))
    plan.cleanup.append(folder)
    plan.downloads.append((entry, folder / entry.path.rsplit("/", 1)[-1]))
    plan.loads.append((db, folder / entry.path.rsplit("/", 1)[-1]))
    plan.targets[name] = db.conninfo
    return db


def restore(
    source: str,
    *,
    db: str | None = None,
    store: str | os.PathLike[str] | None = None,
    tracking: str | None = None,
    artifacts: str | None = None,
    progress: Progress | None = None,
) -> Restored:
    """Restore a backup into an empty place.

    Parameters
    ----------
    source
        ``s3://BUCKET/PREFIX/<id>``, or ``s3://BUCKET/PREFIX`` for its newest complete backup.
    db
        Where the job database goes (``sqlite:///PATH``, which must not exist, or an empty
        PostgreSQL database); by default ``$QUARRY_DB``, else ``$QUARRY_HOME/jobs.db``.
    store
        The directory (new or empty) the data store goes to; by default ``$QUARRY_STORE``,
        else ``$QUARRY_HOME/store``.
    tracking, artifacts
        The tracking database and artifact folder (new or empty); by default Quarry's own.
        MLflow's records of artifact locations are moved to the new folder.
    progress
        Called with (part, files done, files in all) as files come down.

    Raises
    ------
    UsageError
        A target is not empty, or is another kind of database than the backup's.
    DataError
        No such backup, an incomplete one (no manifest.json), a file whose SHA-256 is not
        the manifest's (nothing is restored then), a failed ``pg_restore``.
    """
    from quarry.jobs._store import default_url
    from quarry.settings import default_store

    remote, manifest = _find(source)
    plan = _Plan()
    staged_tracking: Database | None = None
    tracking_target: Database | None = None
    old_root = new_root = None
    # every check before anything is written
    jobs = manifest.part("jobs")
    if jobs is not None:
        target = parse_database(db or default_url(), "--db")
        if target.kind != jobs.kind:
            raise UsageError(
                f"the backup's job database is {jobs.kind} and --db {target.shown} "
                f"is {target.kind}: give --db a {jobs.kind} URL"
            )
        target.ensure_empty(
            "move it away, or give --db a new path"
            if target.kind == "sqlite"
            else "create a new, empty database (createdb NAME) and give it as --db"
        )
    track = manifest.part("tracking")
    if track is not None:
        uri = tracking or default_tracking()
        if uri.split(":", 1)[0].split("+", 1)[0] not in ("sqlite", "postgresql", "postgres"):
            raise UsageError(
                f"the tracking URI {uri} is a server: restore its own database; or "
                "unset QUARRY_TRACKING_URI to restore under QUARRY_HOME"
            )
        tracking_target = parse_database(uri, "the tracking URI")
        if tracking_target.kind != track.kind:
            raise UsageError(
                f"the backup's tracking database is {track.kind} and "
                f"{tracking_target.shown} is {tracking_target.kind}: set "
                f"QUARRY_TRACKING_URI to a {track.kind} URL"
            )
        tracking_target.ensure_empty(
            "move it away, or give --home an empty folder"
            if tracking_target.kind == "sqlite"
            else "create a new, empty database and set QUARRY_TRACKING_URI to it"
        )
    arts = manifest.part("artifacts")
    artifact_folder = None
    if arts is not None:
        new_root = artifacts if artifacts is not None else default_artifacts()
        artifact_folder = local_folder(new_root) if new_root else None
        if artifact_folder is None:
            raise UsageError(
                f"artifacts go to {new_root or 'a tracking server'}: restore "
                "writes them to a local folder; unset QUARRY_ARTIFACT_URI"
            )
        artifact_folder = artifact_folder.resolve()
        _empty_folder(artifact_folder, "move it away, or give --home an empty folder")
        old_root = track.artifact_root if track is not None else None
    kept = manifest.part("store")
    store_folder = None
    if kept is not None:
        text = os.fspath(store if store is not None else default_store())
        if "://" in text:
            raise UsageError(
                f"--store {text}: restore writes a store to a local directory; "
                "copy it to S3 afterwards if it lives there"
            )
        store_folder = Path(text).expanduser().resolve()
        _empty_folder(store_folder, "give --store a new or empty directory")

    try:
        if jobs is not None:
            _plan_database("jobs", target, manifest, plan)
        if track is not None and tracking_target is not None:
            staged_tracking = _plan_database("tracking", tracking_target, manifest, plan)
        if arts is not None and artifact_folder is not None:
            staged = _stage_folder(artifact_folder, manifest.id, plan)
            plan.downloads += [(e, staged / e.path.removeprefix("artifacts/")) for e in arts.files]
            plan.targets["artifacts"] = str(artifact_folder)
        if kept is not None and store_folder is not None:
            staged = _stage_folder(store_folder, manifest.id, plan)
            plan.downloads += [(e, staged / e.path.removeprefix("store/")) for e in kept.files]
            plan.targets["store"] = str(store_folder)
        _download(remote, plan.downloads, progress)
        rebased = _put_in_place(plan, staged_tracking, old_root, new_root)
    finally:
        for path in plan.cleanup:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
    return Restored(manifest, plan.targets, rebased)


def _download(
    remote: Remote, downloads: list[tuple[FileEntry, Path]], progress: Progress | None
) -> None:
    if not downloads:
        return
    with ThreadPoolExecutor(max_workers=_THREADS) as pool:
        futures = [pool.submit(remote.download, entry, dest) for entry, dest in downloads]
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
            if progress is not None:
                progress("restore", done, len(downloads))


def _put_in_place(
    plan: _Plan,
    staged_tracking: Database | None,
    old_root: str | None,
    new_root: str | None,
) -> int:
    """Every file is there and checked: load the dumps, move the rest into place, and point
    MLflow's artifact locations at the new folder; how many it moved."""
    rebased = 0
    move_roots = old_root is not None and new_root is not None and old_root != new_root
    for database, dump in plan.loads:
        database.load(dump)
    if move_roots and staged_tracking is not None:
        assert old_root is not None and new_root is not None
        # a SQLite file is rebased while it is still staged; PostgreSQL once loaded
        rebased = staged_tracking.rebase_artifacts(old_root, new_root)
    for staged, final in plan.moves:
        if final.is_dir():
            final.rmdir()  # checked empty
        os.replace(staged, final)
    return rebased
