"""Answers read from a SQLite tracking database, remembered until the database changes.

SQLite counts every committed write in its file header (the "file change counter", bytes 24
to 27, in rollback-journal mode, which is how MLflow opens it). Reading those 100 bytes costs
microseconds; asking MLflow costs its import and store set-up, about two seconds. So an
answer is kept with the counter (and the file's size and modification time) read *before*
MLflow was asked: a write in between makes the memo look older than it is, never newer, and
the next read asks again. A database in WAL mode (a ``-wal`` file beside it), or any other
tracking store, is always asked.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from quarry.settings import quarry_home

__all__ = ["RegistryMemo"]

_HEADER = b"SQLite format 3\x00"


def _database(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _stamp(db: Path) -> list[int] | None:
    """The database's change counter, size, modification and change times and inode; None
    when the file is not a SQLite database in rollback-journal mode (absent, empty, or in WAL
    mode, which leaves the counter alone: header bytes 18 and 19 are 2 there, and a ``-wal``
    file is beside it while it is open). The change time and inode tell a restored backup
    from the file it replaced, even one copied with its counter and modification time."""
    if Path(f"{db}-wal").exists():
        return None
    try:
        with db.open("rb") as f:
            head = f.read(100)
        st = db.stat()
    except OSError:
        return None
    if len(head) < 100 or not head.startswith(_HEADER) or 2 in (head[18], head[19]):
        return None
    counter = int.from_bytes(head[24:28], "big")
    return [counter, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


@dataclass
class RegistryMemo:
    """What was read of ``db`` while its stamp was ``stamp`` (``aliases``: "name\\0alias" ->
    version or None), kept in ``$QUARRY_HOME/cache/registry.json``."""

    db: str
    stamp: list[int]
    aliases: dict[str, int | None] = field(default_factory=dict)

    @staticmethod
    def _file() -> Path:
        return quarry_home() / "cache" / "registry.json"

    @classmethod
    def open(cls, uri: str) -> RegistryMemo | None:
        """The memo of the tracking database at ``uri``, emptied when the database changed
        since it was written; None when answers there cannot be remembered."""
        if os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").lower() in ("1", "true", "yes"):
            return None  # aliases are then per workspace: not worth a key of their own
        db = _database(uri)
        stamp = None if db is None else _stamp(db)
        if db is None or stamp is None:
            return None
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            kept = json.loads(cls._file().read_text())[str(db.resolve())]
            if kept["stamp"] == stamp:
                return cls(str(db.resolve()), stamp, dict(kept["aliases"]))
        return cls(str(db.resolve()), stamp)

    def remember(self, key: str, value: int | None) -> None:
        """Keep ``value`` under ``key`` with the stamp read when the memo was opened (one
        file for every database, replaced whole: a reader never sees half of it)."""
        self.aliases[key] = value
        path = self._file()
        with contextlib.suppress(OSError, ValueError):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                kept = json.loads(path.read_text())
                if not isinstance(kept, dict):
                    kept = {}
            except (OSError, ValueError):
                kept = {}
            kept[self.db] = {"stamp": self.stamp, "aliases": self.aliases}
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".registry-")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(kept, f)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)  # left only when the replace did not happen
