"""Features for universes larger than memory, written to Parquet as they are computed.

Time-series operators need one instrument's whole history and nothing of the others, so the
plan runs over chunks of instruments, sized so that the chunk's live panels fit the memory
setting. Cross-sectional operators need every instrument on a day: before the chunks, each
one's argument is computed chunk by chunk into one panel over the whole universe, and the
operator then runs day by day across it (one panel per cross-sectional node is the memory
they cost). Each finished chunk is written straight away, as float32 (the precision Qlib
keeps its features in), so peak memory is the input panels plus one chunk's work.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from quarry._memory import reuse_freed_memory
from quarry.exceptions import DataError, UsageError
from quarry.features._compile import LABEL, LEAVES, Plan, as_series, evaluate
from quarry.features._expr import Expr
from quarry.features._grid import BY_DATE, BY_INSTRUMENT, Grid

__all__ = [
    "DEFAULT_MEMORY",
    "ChunkWriter",
    "ParquetOut",
    "Written",
    "compute_chunks",
    "compute_to_parquet",
    "parse_size",
]

DEFAULT_MEMORY = "4GB"
MEMORY_ENV = "QUARRY_FEATURES_MEMORY"
_BASELINE = 400 * 2**20  # the interpreter, numba, polars and arrow themselves
_SCRATCH_PANELS = 4  # temporaries inside one operator (masks, a kernel's output)
_OUTPUT_COPIES = 4  # float32 columns, the frame, its arrow table, the chunk being written
# Floats gain nothing from dictionaries, which cost most of the write time; zstd at level 1
# still saves a quarter of the size at the speed of no compression.
_PARQUET = {"compression": "zstd", "compression_level": 1, "use_dictionary": [BY_INSTRUMENT]}

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Written:
    """What a run wrote: rows, feature columns and how it was chunked."""

    rows: int
    columns: int
    chunks: int
    instruments_per_chunk: int


def parse_size(text: str) -> int:
    """Bytes from a size such as ``4GB``, ``512MiB`` or ``8g``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise UsageError(f"memory size {text!r}: write it like 4GB, 512MB or 8GiB")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[m.group(2)]
    return int(float(m.group(1)) * scale)


def memory_budget(memory: str | None) -> int:
    """The memory setting: the argument, else $QUARRY_FEATURES_MEMORY, else 4GB."""
    return parse_size(memory or os.environ.get(MEMORY_ENV) or DEFAULT_MEMORY)


def peak_panels(plan: Plan) -> int:
    """The most panels the plan holds at once, walking it in order and dropping each node
    after its last user (as ``evaluate`` does), plus fused quantiles computed early."""
    live: set[Expr] = set()
    peak = 0
    for i, node in enumerate(plan.nodes):
        live.add(node)
        peak = max(peak, len(live) + len(plan.fused.get(node, ())))
        live -= {a for a in plan.inputs(node) if plan.last_use.get(a) == i}
        if node not in plan.last_use:  # an output nothing reads: handed over, then freed
            live.discard(node)
    return peak + _SCRATCH_PANELS


class ChunkWriter(Protocol):
    """Where finished chunks go: an output file or directory, or a cache entry."""

    def write(self, part: pl.DataFrame) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


def compute_to_parquet(
    grid: Grid,
    plan: Plan,
    out: Path,
    *,
    emit: np.ndarray | None = None,
    memory: str | None = None,
    instruments_per_chunk: int | None = None,
    progress: Progress | None = None,
) -> Written:
    """Compute ``plan`` over ``grid`` in bounded memory and write Parquet to ``out``
    (with the plan's expressions in the file's metadata, see ``plan_metadata``).

    ``emit`` marks the cells to write (default: every cell the bars had). A path ending in
    ``.parquet`` becomes one file with a row group per chunk; any other path a directory
    of part files, one per chunk (see ``ParquetOut``). Rows are sorted by instrument, then
    date; columns are instrument, date and one float32 column per output, missing values
    null. ``instruments_per_chunk`` overrides the size worked out from ``memory``.
    """
    return compute_chunks(
        grid,
        plan,
        ParquetOut(out, plan_metadata(plan)),
        emit=emit,
        memory=memory,
        instruments_per_chunk=instruments_per_chunk,
        progress=progress,
    )


def plan_metadata(plan: Plan) -> dict[str, str]:
    """Parquet metadata that says how the columns were made: ``quarry.features`` (a JSON
    object of name -> expression) and ``quarry.label`` (the label's expression), so that
    training can tell the label's horizon from the file alone."""
    features = {n: str(e) for n, e in plan.outputs.items() if n != LABEL}
    meta = {"quarry.features": json.dumps(features)}
    if LABEL in plan.outputs:
        meta["quarry.label"] = str(plan.outputs[LABEL])
    return meta


def compute_chunks(
    grid: Grid,
    plan: Plan,
    writer: ChunkWriter,
    *,
    emit: np.ndarray | None = None,
    memory: str | None = None,
    instruments_per_chunk: int | None = None,
    progress: Progress | None = None,
) -> Written:
    """Compute ``plan`` over ``grid`` in bounded memory, handing each chunk to ``writer``
    (closed when all went well, aborted otherwise)."""
    try:
        return _compute_chunks(grid, plan, writer, emit, memory, instruments_per_chunk, progress)
    except BaseException:
        writer.abort()
        raise


def _compute_chunks(
    grid: Grid,
    plan: Plan,
    writer: ChunkWriter,
    emit: np.ndarray | None,
    memory: str | None,
    instruments_per_chunk: int | None,
    progress: Progress | None,
) -> Written:
    reuse_freed_memory()
    budget = memory_budget(memory)
    n, days = grid.shape
    if n == 0:
        raise DataError("no bars to compute features on")
    emit = grid.present if emit is None else emit & grid.present
    cross = plan.cross_sectional
    fixed = _BASELINE + grid.nbytes + emit.nbytes + len(cross) * n * days * 8
    per_instrument = days * (8 * peak_panels(plan) + _OUTPUT_COPIES * 4 * len(plan.outputs))
    size = (budget - fixed) // per_instrument
    if size < 1:
        need = (fixed + per_instrument) / 2**30
        raise UsageError(
            f"memory setting {budget / 2**30:.1f} GiB is too small for {n:,} instruments x "
            f"{days:,} days: the input panels alone take {fixed / 2**30:.1f} GiB; give "
            f"--memory {np.ceil(need * 10) / 10:.1f}GB or more, or fewer instruments"
        )
    size = min(n, int(instruments_per_chunk or size))
    chunks = [(lo, min(n, lo + size)) for lo in range(0, n, size)]

    known = _cross_sectional(plan, grid, chunks, progress)
    rows = 0
    for lo, hi in chunks:
        part = _chunk_frame(plan, grid, lo, hi, emit[lo:hi], known)
        rows += part.height
        writer.write(part)
        if progress:
            progress("features", hi, n)
        del part
    writer.close()
    return Written(rows, len(plan.outputs), len(chunks), size)


def _cross_sectional(
    plan: Plan, grid: Grid, chunks: list[tuple[int, int]], progress: Progress | None
) -> dict[Expr, np.ndarray]:
    """Each cross-sectional node over the whole universe, in dependency order: its
    arguments chunk by chunk, then the operator across all instruments."""
    known: dict[Expr, np.ndarray] = {}
    cross = plan.cross_sectional
    for step, node in enumerate(cross):
        args = [a for a in node.args if a.op not in LEAVES]
        inputs = _assemble(plan, grid, chunks, known, args)
        whole = [(0, grid.shape[0])]
        known[node] = _assemble(plan, grid, whole, {**known, **inputs}, [node])[node]
        if progress:
            progress("cross-section", step + 1, len(cross))
    return known


def _assemble(
    plan: Plan,
    grid: Grid,
    chunks: list[tuple[int, int]],
    known: dict[Expr, np.ndarray],
    targets: list[Expr],
) -> dict[Expr, np.ndarray]:
    """Panels of ``targets`` over all instruments, computed chunk by chunk."""
    panels = {e: np.empty(grid.shape) for e in targets}
    for lo, hi in chunks if targets else []:

        def keep(e: Expr, panel: np.ndarray, lo: int = lo, hi: int = hi) -> None:
            panels[e][lo:hi] = panel

        evaluate(plan, grid, lo=lo, hi=hi, known=known, targets=targets, sink=keep)
    return panels


def _chunk_frame(
    plan: Plan,
    grid: Grid,
    lo: int,
    hi: int,
    emit: np.ndarray,
    known: dict[Expr, np.ndarray],
) -> pl.DataFrame:
    """The chunk's emitted cells, sorted by instrument then date, one column per output."""
    inst, when = np.nonzero(emit)
    flat = inst * grid.shape[1] + when
    by_expr: dict[Expr, list[str]] = {}
    for name, e in plan.outputs.items():
        by_expr.setdefault(e, []).append(name)
    columns: dict[str, pl.Series] = {}

    def sink(node: Expr, panel: np.ndarray) -> None:
        series = as_series(np.take(panel, flat).astype(np.float32))
        for name in by_expr[node]:
            columns[name] = series.alias(name)

    evaluate(plan, grid, lo=lo, hi=hi, known=known, sink=sink)
    return pl.DataFrame(
        [
            grid.instruments.gather(inst + lo).cast(pl.String).alias(BY_INSTRUMENT),
            grid.calendar.gather(when).alias(BY_DATE),
            *(columns[name] for name in plan.outputs),
        ]
    )


class ParquetOut:
    """One Parquet file with a row group per chunk, or a directory with a file per chunk;
    written under a temporary name and moved into place only when complete, so a failed
    run leaves nothing half-written at ``out``."""

    def __init__(self, out: Path, metadata: dict[str, str] | None = None) -> None:
        self.out = out
        self.metadata = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
        self.single = out.suffix == ".parquet"
        self.tmp = out.with_name(f".{out.name}.partial")
        self.parts = 0
        self._file: pq.ParquetWriter | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quarry-write")
        self._pending: Future[None] | None = None
        _remove(self.tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        if not self.single:
            self.tmp.mkdir()

    def write(self, part: pl.DataFrame) -> None:
        """Write a chunk in the background (arrow's writer releases the GIL), so the next
        chunk is computed meanwhile; at most one write is in flight."""
        self.wait()
        self._pending = self._pool.submit(self._write, part.to_arrow())

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _write(self, table: pa.Table) -> None:
        if self.metadata:
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), **self.metadata}
            )
        if self.single:
            if self._file is None:
                self._file = pq.ParquetWriter(self.tmp, table.schema, **_PARQUET)
            self._file.write_table(table)
        else:
            pq.write_table(table, self.tmp / f"part-{self.parts:05d}.parquet", **_PARQUET)
        self.parts += 1

    def close(self) -> None:
        self.wait()
        self._pool.shutdown()
        if self._file is not None:
            self._file.close()
        _remove(self.out)
        self.tmp.rename(self.out)

    def abort(self) -> None:
        # the failure being handled is the one to report, not a writer's that followed it
        with contextlib.suppress(Exception):
            self.wait()
        self._pool.shutdown()
        if self._file is not None:
            self._file.close()
        _remove(self.tmp)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
