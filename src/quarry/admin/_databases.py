"""The databases a backup copies (the job queue, MLflow's tracking store): SQLite through
Python's ``sqlite3`` backup API, PostgreSQL through ``pg_dump`` and ``pg_restore``.

Both copies are consistent while the services write: SQLite's backup API reads one snapshot
(under WAL, writers go on meanwhile), and ``pg_dump`` reads in one transaction.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from quarry.exceptions import DataError, UsageError

__all__ = ["ARTIFACT_COLUMNS", "Database", "parse_database"]

# Where MLflow's tables keep artifact locations (absolute URIs of the artifact folder): what
# restore moves from the old folder to the new one. Columns a version lacks are skipped.
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("workspaces", "default_artifact_root"),
)
_SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class Database:
    """A database given by its SQLAlchemy URL: a SQLite file (``path``) or a PostgreSQL
    database (``conninfo``, a libpq URI without the password, which travels apart so that it
    shows in no process list)."""

    url: str
    kind: Literal["sqlite", "postgresql"]
    path: Path | None = None
    conninfo: str = ""
    password: str | None = None

    @property
    def shown(self) -> str:
        """The database as a message may show it: never its password."""
        return self.url if self.kind == "sqlite" else self.conninfo

    @property
    def suffix(self) -> str:
        """The file a backup keeps it in ends so: ``.db`` (SQLite) or ``.pgdump``."""
        return ".db" if self.kind == "sqlite" else ".pgdump"

    def exists(self) -> bool:
        """Whether there is something to back up (a PostgreSQL database is asked by dumping)."""
        return self.kind == "postgresql" or (self.path is not None and self.path.is_file())

    # -- backing up --------------------------------------------------------------------------

    def dump(self, out: Path) -> None:
        """A consistent copy into the file ``out``: a SQLite database, or ``pg_dump``'s
        custom format."""
        if self.kind == "postgresql":
            self._run(
                "pg_dump",
                ["--format=custom", "--no-password", f"--file={out}", f"--dbname={self.conninfo}"],
            )
            return
        assert self.path is not None
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such SQLite database; check the URL {self.url}")
        try:
            # read-only: a mistyped path never creates an empty database
            source = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60
            )
            try:
                copy = sqlite3.connect(out)
                try:
                    source.backup(copy)
                    (check,) = copy.execute("PRAGMA quick_check").fetchone()
                finally:
                    copy.close()
            finally:
                source.close()
        except sqlite3.Error as exc:
            raise DataError(f"{self.path}: cannot copy the SQLite database: {exc}") from None
        if check != "ok":
            raise DataError(
                f"{self.path}: the copy failed SQLite's check ({check}); check the "
                "database (sqlite3 PATH 'PRAGMA integrity_check')"
            )

    # -- restoring ---------------------------------------------------------------------------

    def ensure_empty(self, fix: str) -> None:
        """Raise ``UsageError`` unless restoring here overwrites nothing: no SQLite file (nor
        its journal), or a PostgreSQL database without tables; ``fix`` says what to do."""
        if self.kind == "sqlite":
            assert self.path is not None
            there = [
                p
                for p in (self.path, *(Path(f"{self.path}{s}") for s in _SIDE_FILES))
                if p.exists()
            ]
            if there:
                raise UsageError(f"{there[0]} already exists: restore into an empty place; {fix}")
            return
        with self._connect() as conn:
            tables = [
                f"{schema}.{name}"
                for schema, name in conn.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables WHERE "
                    "table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
                )
            ]
        if tables:
            shown = ", ".join(tables[:3]) + (", ..." if len(tables) > 3 else "")
            raise UsageError(
                f"{self.conninfo} already has {len(tables)} tables ({shown}): restore "
                f"into an empty place; {fix}"
            )

    def load(self, dump: Path) -> None:
        """Restore a PostgreSQL dump into this (empty) database, in one transaction: a
        failure leaves it empty. (A SQLite file is moved into place by the caller.)"""
        assert self.kind == "postgresql"
        self._run(
            "pg_restore",
            [
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--no-password",
                f"--dbname={self.conninfo}",
                str(dump),
            ],
        )

    def rebase_artifacts(self, old: str, new: str) -> int:
        """Point MLflow's artifact locations under ``old`` (a folder's URI) at ``new``; the
        number of rows changed."""
        old, new = old.rstrip("/"), new.rstrip("/")
        if self.kind == "sqlite":
            assert self.path is not None
            conn = sqlite3.connect(self.path)
            try:
                with conn:
                    return self._rebase(conn, old, new, "?", _sqlite_columns(conn))
            finally:
                conn.close()
        with self._connect() as pg:
            present = {
                (t, c)
                for t, c in pg.execute(
                    "SELECT table_name, column_name FROM information_schema.columns "
                    "WHERE table_schema = current_schema()"
                )
            }
            return self._rebase(pg, old, new, "%s", present)

    @staticmethod
    def _rebase(conn: Any, old: str, new: str, mark: str, present: set[tuple[str, str]]) -> int:
        changed = 0
        for table, column in ARTIFACT_COLUMNS:
            if (table, column) not in present:
                continue
            # only the folder itself and what is below it (not a sibling such as old + "2")
            sql = (
                f"UPDATE {table} SET {column} = CAST({mark} AS TEXT) || substr({column}, "  # noqa: S608 (names from ARTIFACT_COLUMNS)
                f"{len(old) + 1}) WHERE {column} = {mark} OR substr({column}, 1, "
                f"{len(old) + 1}) = {mark}"
            )
            changed += conn.execute(sql, (new, old, old + "/")).rowcount or 0
        return changed

    # -- PostgreSQL --------------------------------------------------------------------------

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(
                self.conninfo, password=self.password, connect_timeout=10, autocommit=True
            )
        except psycopg.Error as exc:
            raise DataError(
                f"cannot connect to {self.conninfo}: {_first_line(str(exc))}; check "
                "the URL, and create the database first (createdb NAME)"
            ) from None

    def _run(self, tool: str, args: list[str]) -> None:
        found = shutil.which(tool)
        if found is None:
            raise UsageError(
                f"{tool} is not installed: install PostgreSQL's client programs "
                "(e.g. apt-get install postgresql-client), of the server's "
                "version or newer"
            )
        env = dict(os.environ)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        done = subprocess.run([found, *args], env=env, capture_output=True, text=True)  # noqa: S603 (our arguments, no shell)
        if done.returncode != 0:
            raise DataError(f"{tool} of {self.conninfo} failed: {_first_line(done.stderr)}")


def _sqlite_columns(conn: sqlite3.Connection) -> set[tuple[str, str]]:
    tables = [
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    ]
    return {(t, row[1]) for t in tables for row in conn.execute(f'PRAGMA table_info("{t}")')}


def _first_line(text: str) -> str:
    """The line of a tool's output that says what went wrong (its first ``error:`` line)."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    chosen = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
    return " ".join(chosen.split()) or "no message"


def parse_database(url: str, flag: str) -> Database:
    """The database of a SQLAlchemy URL given as ``flag``: ``sqlite:///PATH`` or
    ``postgresql[+driver]://USER[:PASSWORD]@HOST[:PORT]/DB[?options]``."""
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0].lower()
    if sep and base == "sqlite":
        path = rest.split("?", 1)[0]
        if not path.startswith("/") or path.strip("/") in ("", ":memory:"):
            raise UsageError(f"{flag} {url}: give a SQLite file as sqlite:///PATH")
        return Database(url, "sqlite", path=Path(unquote(path[1:])).expanduser())
    if sep and base in ("postgresql", "postgres"):
        parts = urlsplit(url)
        if not parts.path.strip("/"):
            raise UsageError(f"{flag} {url}: name the database, postgresql://USER@HOST/DB")
        netloc = parts.netloc.rsplit("@", 1)
        host = netloc[-1]
        user = f"{parts.username}@" if parts.username else ""
        conninfo = urlunsplit(("postgresql", user + host, parts.path, parts.query, ""))
        password = unquote(parts.password) if parts.password is not None else None
        return Database(url, "postgresql", conninfo=conninfo, password=password)
    raise UsageError(f"{flag} {url}: give sqlite:///PATH or postgresql://USER@HOST[:PORT]/DB")
