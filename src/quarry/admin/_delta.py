"""A consistent copy of a data store's Delta tables while ingests may run.

A Delta commit is its log entry ``_delta_log/NNNNNNNNNNNNNNNNNNNN.json``, written after the
data files it adds, and data files are never changed. So the copy first lists every table's
log (the snapshot: version N per table), then lists the data files, which then include every
file a commit up to N adds, copies those, and copies the log entries up to N last. A commit
that lands meanwhile leaves at most unreferenced data files in the copy (which no reader sees,
like a killed writer's), never half a commit. ``_last_checkpoint`` is only a hint to readers
(they find a checkpoint by listing the log without it), so it is not copied: it might name a
checkpoint newer than N.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from quarry.exceptions import StoreNotFoundError

__all__ = ["StoreSnapshot", "snapshot_store"]

LOG = "_delta_log"
# NNNN.json, NNNN.checkpoint[.M.K].parquet, NNNN.crc, NNNN.MMMM.compacted.json: the last
# version a log file covers is its second number when it has two
_VERSIONED = re.compile(r"(?P<first>\d{20})(?:\.(?P<last>\d{20}))?\.")
_COMMIT = re.compile(r"(?P<version>\d{20})\.json")


@dataclass(frozen=True)
class StoreSnapshot:
    """What to copy of a store: its root (``fs``, a pyarrow filesystem, at ``root``), the
    data files and the log files up to each table's ``versions`` (paths relative to the root,
    with sizes)."""

    uri: str
    fs: Any
    root: str
    data: tuple[tuple[str, int], ...]
    log: tuple[tuple[str, int], ...]
    versions: dict[str, int]

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"


def _listing(fs: Any, root: str) -> list[tuple[str, int]]:
    from pyarrow import fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return [
        (info.path[len(root) + 1 :], int(info.size))
        for info in infos
        if info.type == pafs.FileType.File
    ]


def snapshot_store(store: str | os.PathLike[str]) -> StoreSnapshot:
    """List what a consistent copy of ``store`` (a directory or ``s3://bucket/prefix``)
    takes: each table's log up to its newest commit, then the data files."""
    import pyarrow as pa
    from pyarrow import fs as pafs

    from quarry.admin._s3 import filesystem
    from quarry.data import parse_location

    location = parse_location(store)
    if location.is_local:
        fs, root = pafs.LocalFileSystem(), location.uri.rstrip("/")
    else:
        fs, root = filesystem(location.storage_options), location.uri.removeprefix("s3://")
    missing = StoreNotFoundError(
        f"no Quarry store at {location.uri}: give --store the store's directory or s3:// prefix"
    )
    try:
        logs: dict[str, list[tuple[str, int]]] = {}
        for rel, size in _listing(fs, root):  # the logs as they are now: the snapshot
            parts = rel.split("/")
            if len(parts) >= 2 and parts[-2] == LOG:
                logs.setdefault("/".join(parts[:-2]) or ".", []).append((rel, size))
        versions = {}
        for table, files in logs.items():
            commits = [
                int(m["version"])
                for rel, _ in files
                if (m := _COMMIT.fullmatch(rel.rsplit("/", 1)[-1]))
            ]
            if commits:
                versions[table] = max(commits)
        if not versions:
            raise missing
        # listed after the logs: every data file of a commit up to the snapshot is there
        data = [(rel, size) for rel, size in _listing(fs, root) if LOG not in rel.split("/")[:-1]]
    except (FileNotFoundError, NotADirectoryError):
        raise missing from None
    except (OSError, pa.ArrowException) as exc:
        text = " ".join(str(exc).split())[:300]
        raise StoreNotFoundError(f"cannot list the store {location.uri}: {text}") from None
    log = []
    for table in sorted(versions):
        for rel, size in sorted(logs[table]):
            found = _VERSIONED.match(rel.rsplit("/", 1)[-1])
            # a commit in flight (its temporary file, or a version after the snapshot), and
            # _last_checkpoint: not part of the copy
            if found and int(found["last"] or found["first"]) <= versions[table]:
                log.append((rel, size))
    return StoreSnapshot(location.uri, fs, root, tuple(sorted(data)), tuple(log), versions)
