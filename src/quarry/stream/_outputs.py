"""What a stream keeps on disk: its outputs by bar time, and the bars its state needs.

One SQLite database (``stream.db`` in the outputs folder) holds, per bar time, the scores,
target positions and paper orders with the model version, and the bar's record: its number
in the stream, and whether its outputs reached the broker. Every table is keyed by bar time,
so writing a bar twice (a restart that processes it again) changes nothing. A bar's rows
and its record are one transaction: a bar is stored whole or not at all.

A bar's scores (one per instrument: 16,000 for the whole market) are one row, holding the
Arrow IPC stream that was published (columns bar_time, instrument, score, model_version),
not a row per instrument: inserting 16,000 rows took 40-50 ms of CPU a bar, a quarter of the
stream's whole cost at 16,000 instruments. ``table("scores")`` and ``bodies`` read them back
as published. The positions (a few dozen a bar) and orders stay rows, for SQL.

The last bars (as many as the features' window reads) are kept as Arrow IPC files under
``bars/``, named by bar number; with the instruments' first bar numbers they rebuild the
online features' state exactly after a restart.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from quarry.exceptions import UsageError
from quarry.stream._snapshots import decode_frame, encode_frame

__all__ = ["BarRecord", "OutputStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bars_done (
    bar_time TEXT PRIMARY KEY, bar_index INTEGER NOT NULL, instruments INTEGER NOT NULL,
    model_version INTEGER, scored INTEGER NOT NULL, published INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    bar_time TEXT, digest TEXT, PRIMARY KEY (bar_time, digest)
);
CREATE TABLE IF NOT EXISTS first_bars (instrument TEXT PRIMARY KEY, bar_index INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS scores (
    bar_time TEXT PRIMARY KEY, model_version INTEGER, instruments INTEGER NOT NULL,
    arrow BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS positions (
    bar_time TEXT, instrument TEXT, weight REAL, days_held INTEGER, model_version INTEGER,
    PRIMARY KEY (bar_time, instrument)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS orders (
    bar_time TEXT, instrument TEXT, side TEXT, target_weight REAL, model_version INTEGER,
    PRIMARY KEY (bar_time, instrument)
) WITHOUT ROWID;
"""
# WITHOUT ROWID: the rows live in their key's tree, not in a second one beside it (not for
# the scores, whose rows are large).

OUTPUTS = ("scores", "positions", "orders")
ROWS = ("positions", "orders")  # stored a row per instrument; the scores as one Arrow record
# the scores' columns, as published
SCORES = {"bar_time": pl.String, "instrument": pl.String, "score": pl.Float64,
          "model_version": pl.Int64}  # fmt: skip


@dataclass(frozen=True)
class BarRecord:
    bar_time: str
    bar_index: int
    instruments: int
    model_version: int | None
    scored: bool
    published: bool


def _record(row: tuple[object, ...]) -> BarRecord:
    time, index, count, version, scored, published = row
    return BarRecord(str(time), int(index), int(count),  # type: ignore[call-overload]
                     None if version is None else int(version),  # type: ignore[call-overload]
                     bool(scored), bool(published))  # fmt: skip


class OutputStore:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.bars_dir = self.folder / "bars"
        self.bars_dir.mkdir(parents=True, exist_ok=True)
        # one thread at a time, but not always the one that opened it (a runner started in
        # a thread of its own)
        self.db = sqlite3.connect(
            self.folder / "stream.db", isolation_level=None, check_same_thread=False
        )
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._refuse_old_layout()
        self.db.executescript(_SCHEMA)

    def _refuse_old_layout(self) -> None:
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(scores)")}
        if "score" in columns:
            self.db.close()
            raise UsageError(
                f"{self.folder / 'stream.db'}: written by an earlier Quarry (a row per score); "
                "start the stream with a new outputs folder"
            )

    def close(self) -> None:
        self.db.close()

    # -- bar records -----------------------------------------------------------------------

    def record(self, bar_time: str) -> BarRecord | None:
        row = self.db.execute(
            "SELECT bar_time, bar_index, instruments, model_version, scored, published "
            "FROM bars_done WHERE bar_time = ?",
            (bar_time,),
        ).fetchone()
        return None if row is None else _record(row)

    def last(self) -> BarRecord | None:
        row = self.db.execute(
            "SELECT bar_time, bar_index, instruments, model_version, scored, published "
            "FROM bars_done ORDER BY bar_index DESC LIMIT 1"
        ).fetchone()
        return None if row is None else _record(row)

    def first_bars(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT instrument, bar_index FROM first_bars").fetchall())

    def store(
        self,
        record: BarRecord,
        outputs: Mapping[str, pl.DataFrame],
        new_instruments: Iterable[tuple[str, int]],
        digests: Iterable[str] = (),
        bodies: Mapping[str, bytes] | None = None,
    ) -> None:
        """A bar's outputs, record, newly seen instruments and the digests of its messages,
        in one transaction. ``bodies``: the outputs as published (Arrow IPC), of which the
        scores are stored as they are (encoded here when not given)."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO messages VALUES (?, ?)",
                [(record.bar_time, d) for d in digests],
            )
            db.executemany("INSERT OR IGNORE INTO first_bars VALUES (?, ?)", list(new_instruments))
            for name, frame in outputs.items():
                assert name in OUTPUTS
                if name == "scores":
                    body = bodies["scores"] if bodies else encode_frame(frame)
                    row = (record.bar_time, record.model_version, frame.height, body)
                    db.execute("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", row)
                elif frame.height:
                    cols = ", ".join("?" * frame.width)
                    sql = f"INSERT OR REPLACE INTO {name} VALUES ({cols})"  # noqa: S608 - ours
                    db.executemany(sql, frame.rows())
            db.execute(
                "INSERT OR REPLACE INTO bars_done VALUES (?, ?, ?, ?, ?, ?)",
                (record.bar_time, record.bar_index, record.instruments, record.model_version,
                 int(record.scored), int(record.published)),
            )  # fmt: skip
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def seen(self, bar_time: str, digest: str) -> bool:
        """Whether a message with these bytes was part of bar ``bar_time``."""
        row = self.db.execute(
            "SELECT 1 FROM messages WHERE bar_time = ? AND digest = ?", (bar_time, digest)
        ).fetchone()
        return row is not None

    def mark_published(self, bar_time: str) -> None:
        self.db.execute("UPDATE bars_done SET published = 1 WHERE bar_time = ?", (bar_time,))

    def bodies(self, bar_time: str) -> dict[str, bytes]:
        """A stored bar's outputs as they were published (Arrow IPC), by output name."""
        out = {}
        row = self.db.execute("SELECT arrow FROM scores WHERE bar_time = ?", (bar_time,))
        for (body,) in row.fetchall():
            out["scores"] = bytes(body)
        for name in ROWS:
            out[name] = encode_frame(self._rows(name, "WHERE bar_time = ?", (bar_time,)))
        return out

    def table(self, name: str) -> pl.DataFrame:
        """Every bar's ``name`` (scores, positions, orders, or a record table), as rows."""
        if name == "scores":
            blobs = self.db.execute("SELECT arrow FROM scores ORDER BY bar_time").fetchall()
            frames = [decode_frame(bytes(b)) for (b,) in blobs]
            return pl.concat(frames) if frames else pl.DataFrame(schema=SCORES)
        return self._rows(name)

    def _rows(self, name: str, where: str = "", args: tuple[object, ...] = ()) -> pl.DataFrame:
        cursor = self.db.execute(f"SELECT * FROM {name} {where}", args)  # noqa: S608 - ours
        cols = [d[0] for d in cursor.description]
        return pl.DataFrame(cursor.fetchall(), schema=cols, orient="row")

    def last_scored(self) -> str | None:
        """The last bar time scored."""
        row = self.db.execute(
            "SELECT bar_time FROM bars_done WHERE scored = 1 ORDER BY bar_index DESC LIMIT 1"
        ).fetchone()
        return None if row is None else str(row[0])

    def held(self) -> dict[str, int]:
        """The positions after the last scored bar: instrument -> bars held."""
        last = self.last_scored()
        if last is None:
            return {}
        rows = self.db.execute(
            "SELECT instrument, days_held FROM positions WHERE bar_time = ? AND weight > 0",
            (last,),
        )
        return dict(rows.fetchall())

    # -- the bars the state needs -------------------------------------------------------------

    def keep_bar(self, index: int, time: str, frame: pl.DataFrame) -> None:
        """Bar number ``index`` on disk, written whole, then renamed."""
        table = frame.to_arrow().replace_schema_metadata({b"quarry.time": time.encode()})
        path = self.bars_dir / f"{index:012d}.arrow"
        tmp = path.with_suffix(".tmp")
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(tmp, path)

    def prune_bars(self, index: int, depth: int) -> None:
        """Remove the bar that fell out of the last ``depth`` once bar ``index`` is stored
        (only then: a kill before the commit must still find ``depth`` bars)."""
        old = self.bars_dir / f"{index - depth:012d}.arrow"
        if old.exists():
            old.unlink()

    def kept_bars(self, upto: int) -> list[tuple[int, str, pl.DataFrame]]:
        """The kept bars up to number ``upto``, oldest first; any later file (a bar never
        committed) is removed."""
        out = []
        for path in sorted(self.bars_dir.glob("*.arrow")):
            index = int(path.stem)
            if index > upto:
                path.unlink()
                continue
            table = ipc.open_file(pa.memory_map(str(path))).read_all()
            time = (table.schema.metadata or {})[b"quarry.time"].decode()
            frame = pl.from_arrow(table.replace_schema_metadata(None))
            assert isinstance(frame, pl.DataFrame)
            out.append((index, time, frame))
        for tmp in self.bars_dir.glob("*.tmp"):
            tmp.unlink()
        return out
