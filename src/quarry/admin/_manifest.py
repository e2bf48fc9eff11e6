"""A backup's manifest: what was copied, from where, with each file's size and SHA-256.

``manifest.json`` is the last object a backup writes: a backup folder without one was
interrupted, and restore refuses it. Its layout (``format`` 1)::

    {"format": 1, "id": "20261203T101500Z", "quarry_version": "...",
     "started_at": "...", "finished_at": "...",
     "job_db": "sqlite" | "postgresql" | null, "store_versions": {"bars": 3, ...},
     "parts": {"jobs": {"kind": "sqlite", "source": "sqlite:////srv/quarry/jobs.db",
                        "files": 1, "bytes": 98304,
                        "entries": [{"path": "jobs/jobs.db", "bytes": 98304, "sha256": "..."}]},
               "tracking": {..., "artifact_root": "file:///srv/quarry/mlartifacts"},
               "artifacts": {"kind": "files", ...},
               "store": {"kind": "delta", ..., "versions": {"bars": 3, ...}}},
     "skipped": {"tracking": "why"}, "files": 57, "bytes": 1234567}
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from quarry.admin._s3 import FileEntry
from quarry.exceptions import DataError

__all__ = ["FORMAT", "ID_PATTERN", "MANIFEST", "Manifest", "Part", "backup_id", "id_time"]

FORMAT = 1
MANIFEST = "manifest.json"
ID_PATTERN = re.compile(r"\d{8}T\d{6}Z")
_ID_FORMAT = "%Y%m%dT%H%M%SZ"


def backup_id(when: datetime) -> str:
    """A backup's id: its start in UTC to the second, ``20261203T101500Z``."""
    return when.astimezone(UTC).strftime(_ID_FORMAT)


def id_time(backup: str) -> datetime:
    """The start time an id stands for."""
    return datetime.strptime(backup, _ID_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True)
class Part:
    """One thing a backup copied.

    ``name`` is ``jobs``, ``tracking``, ``artifacts`` or ``store``; ``kind`` is ``sqlite`` or
    ``postgresql`` for a database, ``files`` for the artifact folder, ``delta`` for a store;
    ``source`` is where it came from (no password); ``versions`` each of a store's tables'
    Delta version; ``artifact_root`` the tracking database's artifact folder (a URI), whose
    paths the database holds.
    """

    name: str
    kind: str
    source: str
    files: tuple[FileEntry, ...]
    versions: dict[str, int] = field(default_factory=dict)
    artifact_root: str | None = None

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "source": self.source,
            "files": len(self.files),
            "bytes": self.bytes,
        }
        if self.versions:
            out["versions"] = dict(sorted(self.versions.items()))
        if self.artifact_root is not None:
            out["artifact_root"] = self.artifact_root
        out["entries"] = [
            {"path": f.path, "bytes": f.bytes, "sha256": f.sha256} for f in self.files
        ]
        return out


@dataclass(frozen=True)
class Manifest:
    """A finished backup: its id, where it is (``uri``, the backup's own folder), when it
    ran, the Quarry that made it, the parts it copied and what it skipped, with why."""

    id: str
    uri: str
    quarry_version: str
    started_at: datetime
    finished_at: datetime
    parts: tuple[Part, ...]
    skipped: dict[str, str] = field(default_factory=dict)

    def part(self, name: str) -> Part | None:
        return next((p for p in self.parts if p.name == name), None)

    @property
    def files(self) -> int:
        return sum(len(p.files) for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)

    @property
    def job_db(self) -> str | None:
        """The job database's kind (``sqlite``, ``postgresql``), None if not backed up."""
        jobs = self.part("jobs")
        return jobs.kind if jobs else None

    @property
    def store_versions(self) -> dict[str, int]:
        store = self.part("store")
        return dict(store.versions) if store else {}

    def as_dict(self) -> dict[str, Any]:
        """The manifest as written to ``manifest.json`` (and printed by ``--json``)."""
        return {
            "format": FORMAT,
            "id": self.id,
            "uri": self.uri,
            "quarry_version": self.quarry_version,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "job_db": self.job_db,
            "store_versions": self.store_versions,
            "parts": {p.name: p.as_dict() for p in self.parts},
            "skipped": dict(self.skipped),
            "files": self.files,
            "bytes": self.bytes,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        """Read back what ``as_dict`` wrote; ``DataError`` naming ``where`` if it cannot."""
        try:
            if data["format"] != FORMAT:
                raise DataError(
                    f"{where}: manifest format {data['format']!r} is not {FORMAT}; "
                    "restore it with the Quarry version that made it "
                    f"({data.get('quarry_version')})"
                )
            parts = tuple(
                Part(
                    name=name,
                    kind=str(p["kind"]),
                    source=str(p["source"]),
                    files=tuple(
                        FileEntry(str(e["path"]), int(e["bytes"]), str(e["sha256"]))
                        for e in p["entries"]
                    ),
                    versions={str(k): int(v) for k, v in p.get("versions", {}).items()},
                    artifact_root=p.get("artifact_root"),
                )
                for name, p in data["parts"].items()
            )
            return cls(
                id=str(data["id"]),
                uri=str(data.get("uri", "")),
                quarry_version=str(data["quarry_version"]),
                started_at=datetime.fromisoformat(data["started_at"]),
                finished_at=datetime.fromisoformat(data["finished_at"]),
                parts=parts,
                skipped={str(k): str(v) for k, v in data.get("skipped", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"{where}: not a Quarry backup manifest ({type(exc).__name__}: "
                f"{exc}); restore another backup"
            ) from None
