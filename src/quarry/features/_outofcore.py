"""Features for universes larger than memory, written as they are computed.

Time-series operators need one instrument's whole history and nothing of the others, so the
plan runs over chunks of instruments, sized so that the chunk's live panels fit the memory
setting. Cross-sectional operators need every instrument on a day: before the chunks, each
one's argument is computed chunk by chunk into one panel over the whole universe, and the
operator then runs day by day across it (one panel per cross-sectional node is the memory
they cost). Each finished chunk is written straight away, as float32 (the precision Qlib
keeps its features in), so peak memory is the input panels plus one chunk's work.

The chunks are independent pieces handed to an executor (``quarry.executors``): locally one
after another, or as Ray tasks. The input panels (and each finished cross-sectional panel)
go to the executor once, Ray's object store, where every task reads them without a copy; a
task returns its chunk's frame and this process writes it, so tasks write no file and need
no storage shared with this machine. The output is the same whichever executor runs: each
instrument's values depend on its own history and the whole-universe panels alone, never on
which chunk it was in.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
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
from quarry.executors import Executor, LocalExecutor, Shared
from quarry.features._compile import LABEL, LEAVES, Plan, as_series, evaluate
from quarry.features._expr import Expr
from quarry.features._grid import BY_DATE, BY_INSTRUMENT, Grid
from quarry.features._tables import is_arrow

__all__ = [
    "DEFAULT_MEMORY",
    "ChunkWriter",
    "TableOut",
    "Written",
    "compute_chunks",
    "compute_to_file",
    "parse_size",
]

DEFAULT_MEMORY = "4GB"
MEMORY_ENV = "QUARRY_FEATURES_MEMORY"
_BASELINE = 400 * 2**20  # the interpreter, numba, polars and arrow themselves
_SCRATCH_PANELS = 4  # temporaries inside one operator (masks, a kernel's output)
_OUTPUT_COPIES = 4  # float32 columns, the frame, its arrow table, the chunk being written
# Floats gain nothing from dictionaries, which cost most of the write time. LZ4 (Parquet's
# LZ4_RAW), by measurement on Alpha158 for 300 x 2,500 (650,000 rows x 159 float32), one core:
# written in 0.63 s and read in 0.21 s at 349 MB, where zstd level 1 took 1.08 s and 0.52 s
# for 294 MB, and no compression 0.55 s and 0.22 s for 416 MB. Features are read soon after
# by a training or a backtest: a fast read matters more than 16% of disk. Statistics only
# for the keys (readers filter on them, never on a feature's value). Arrow IPC, uncompressed,
# took 0.28 s for 433 MB, and is read back in 0.10-0.13 s against 0.26-0.39 s. Most of
# Parquet's time is the validity (definition) levels of the nullable columns: without nulls
# it took 0.45 s.
_PARQUET = {"compression": "lz4", "use_dictionary": [BY_INSTRUMENT],
            "write_statistics": [BY_INSTRUMENT, BY_DATE]}  # fmt: skip

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


def compute_to_file(
    grid: Grid,
    plan: Plan,
    out: Path,
    *,
    emit: np.ndarray | None = None,
    memory: str | None = None,
    instruments_per_chunk: int | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
) -> Written:
    """Compute ``plan`` over ``grid`` in bounded memory and write it to ``out`` (with the
    plan's expressions in the file's metadata, see ``plan_metadata``).

    ``emit`` marks the cells to write (default: every cell the bars had). ``out`` is one
    Parquet file (``.parquet``), one Arrow IPC file (``.arrow``, ``.ipc``, ``.feather``) or a
    directory of Parquet files, one per chunk (see ``quarry.features._tables``). Rows are
    sorted by instrument, then date; columns are instrument, date and one float32 column per
    output, missing values null. ``instruments_per_chunk`` overrides the size worked out
    from ``memory``.
    """
    return compute_chunks(
        grid,
        plan,
        TableOut(out, plan_metadata(plan), columns=list(plan.outputs)),
        emit=emit,
        memory=memory,
        instruments_per_chunk=instruments_per_chunk,
        progress=progress,
        executor=executor,
    )


def plan_metadata(plan: Plan) -> dict[str, str]:
    """The file's metadata that says how the columns were made: ``quarry.features`` (a JSON
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
    executor: Executor | None = None,
) -> Written:
    """Compute ``plan`` over ``grid`` in bounded memory, handing each chunk to ``writer``
    (closed when all went well, aborted otherwise).

    ``executor`` computes the chunks (default: one after another in this process). One that
    runs several at once (Ray) gets chunks sized so that as many as it runs at once fit
    ``memory`` together, with the object store's copy of the input panels; on a cluster of
    several machines that makes the setting a bound for each of them.
    """
    try:
        return _compute_chunks(
            grid, plan, writer, emit, memory, instruments_per_chunk, progress,
            executor or LocalExecutor(),
        )  # fmt: skip
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
    executor: Executor,
) -> Written:
    reuse_freed_memory()
    budget = memory_budget(memory)
    n, days = grid.shape
    if n == 0:
        raise DataError("no bars to compute features on")
    emit = grid.present if emit is None else emit & grid.present
    cross = plan.cross_sectional
    at_once = executor.workers
    # Another executor keeps a copy of the inputs in its object store, beside this process's.
    copies = 1 if isinstance(executor, LocalExecutor) else 2
    fixed = _BASELINE + copies * (grid.nbytes + emit.nbytes + len(cross) * n * days * 8)
    per_instrument = days * (8 * peak_panels(plan) + _OUTPUT_COPIES * 4 * len(plan.outputs))
    size = (budget - fixed) // (per_instrument * at_once)
    if size < 1:
        need = (fixed + per_instrument * at_once) / 2**30
        raise UsageError(
            f"memory setting {budget / 2**30:.1f} GiB is too small for {n:,} instruments x "
            f"{days:,} days: the input panels alone take {fixed / 2**30:.1f} GiB; give "
            f"--memory {np.ceil(need * 10) / 10:.1f}GB or more, or fewer instruments"
        )
    size = min(n, int(instruments_per_chunk or size))
    chunks = [(lo, min(n, lo + size)) for lo in range(0, n, size)]

    inputs = _Inputs(executor, {"grid": executor.share(grid), "plan": executor.share(plan)})
    known = _cross_sectional(plan, grid, chunks, progress, inputs)
    shared = {**inputs.shared, "emit": executor.share(emit), **inputs.known_refs(known)}
    rows = 0
    # as many chunks at a time as run at once, so this process holds no more of them
    for first in range(0, len(chunks), at_once):
        batch = chunks[first : first + at_once]
        pieces = [_Piece(lo, hi, inputs.names(known)) for lo, hi in batch]
        for (_, hi), part in zip(batch, executor.map(_frame_piece, pieces, shared=shared),
                                 strict=True):  # fmt: skip
            rows += part.height
            writer.write(part)
            if progress:
                progress("features", hi, n)
            del part
    writer.close()
    return Written(rows, len(plan.outputs), len(chunks), size)


@dataclass(frozen=True)
class _Piece:
    """One chunk of instruments for an executor, and which shared values are which known
    cross-sectional panels (``known_3`` -> its expression)."""

    lo: int
    hi: int
    known: tuple[tuple[str, Expr], ...] = ()
    targets: tuple[Expr, ...] | None = None


class _Inputs:
    """What every piece reads, handed to the executor once: the grid, the plan, and each
    whole-universe cross-sectional panel as it is finished."""

    def __init__(self, executor: Executor, shared: dict[str, Shared[object]]) -> None:
        self.executor = executor
        self.shared = shared
        self._known: dict[Expr, tuple[str, Shared[object]]] = {}

    def known_refs(self, known: dict[Expr, np.ndarray]) -> dict[str, Shared[object]]:
        for node, panel in known.items():
            if node not in self._known:
                self._known[node] = (f"known_{len(self._known)}", self.executor.share(panel))
        return {name: ref for name, ref in (self._known[node] for node in known)}

    def names(self, known: dict[Expr, np.ndarray]) -> tuple[tuple[str, Expr], ...]:
        return tuple((self._known[node][0], node) for node in known)


def _known(piece: _Piece, panels: dict[str, np.ndarray]) -> dict[Expr, np.ndarray]:
    return {node: panels[name] for name, node in piece.known}


def _frame_piece(
    piece: _Piece, *, grid: Grid, plan: Plan, emit: np.ndarray, **panels: np.ndarray
) -> pl.DataFrame:
    """One chunk's output frame (here or in a Ray worker)."""
    reuse_freed_memory()
    known = _known(piece, panels)
    return _chunk_frame(plan, grid, piece.lo, piece.hi, emit[piece.lo : piece.hi], known)


def _panels_piece(
    piece: _Piece, *, grid: Grid, plan: Plan, **panels: np.ndarray
) -> dict[Expr, np.ndarray]:
    """One chunk's rows of the ``targets`` panels (here or in a Ray worker)."""
    reuse_freed_memory()
    assert piece.targets is not None
    out: dict[Expr, np.ndarray] = {}

    def keep(e: Expr, panel: np.ndarray) -> None:
        out[e] = panel.copy()  # evaluate may reuse the panel's memory for a later node

    evaluate(plan, grid, lo=piece.lo, hi=piece.hi, known=_known(piece, panels),
             targets=list(piece.targets), sink=keep)  # fmt: skip
    return out


def _cross_sectional(
    plan: Plan,
    grid: Grid,
    chunks: list[tuple[int, int]],
    progress: Progress | None,
    inputs: _Inputs,
) -> dict[Expr, np.ndarray]:
    """Each cross-sectional node over the whole universe, in dependency order: its
    arguments chunk by chunk (through the executor), then the operator across all
    instruments (here)."""
    known: dict[Expr, np.ndarray] = {}
    cross = plan.cross_sectional
    for step, node in enumerate(cross):
        args = [a for a in node.args if a.op not in LEAVES]
        parts = _assemble(grid, chunks, known, args, inputs)
        known[node] = _whole_universe(plan, grid, node, {**known, **parts})
        if progress:
            progress("cross-section", step + 1, len(cross))
    return known


def _whole_universe(
    plan: Plan, grid: Grid, node: Expr, known: dict[Expr, np.ndarray]
) -> np.ndarray:
    """A cross-sectional operator over all instruments at once, in this process."""
    panel = np.empty(grid.shape)

    def keep(e: Expr, values: np.ndarray) -> None:
        panel[:] = values

    evaluate(plan, grid, lo=0, hi=grid.shape[0], known=known, targets=[node], sink=keep)
    return panel


def _assemble(
    grid: Grid,
    chunks: list[tuple[int, int]],
    known: dict[Expr, np.ndarray],
    targets: list[Expr],
    inputs: _Inputs,
) -> dict[Expr, np.ndarray]:
    """Panels of ``targets`` over all instruments, computed chunk by chunk by the executor,
    as many at a time as it runs at once."""
    panels = {e: np.empty(grid.shape) for e in targets}
    if not targets:
        return panels
    executor = inputs.executor
    shared = {**inputs.shared, **inputs.known_refs(known)}
    names = inputs.names(known)
    at_once = executor.workers
    for first in range(0, len(chunks), at_once):
        batch = chunks[first : first + at_once]
        pieces = [_Piece(lo, hi, names, tuple(targets)) for lo, hi in batch]
        for (lo, hi), part in zip(batch, executor.map(_panels_piece, pieces, shared=shared),
                                  strict=True):  # fmt: skip
            for e, panel in part.items():
                panels[e][lo:hi] = panel
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


class TableOut:
    """One Parquet file with a row group per chunk, one Arrow IPC file with a record batch
    per chunk, or a directory with a Parquet file per chunk, by ``out``'s name (``_tables``);
    written under a temporary name and moved into place only when complete, so a failed run
    leaves nothing half-written at ``out``."""

    def __init__(
        self, out: Path, metadata: dict[str, str] | None = None, columns: Sequence[str] = ()
    ) -> None:
        self.out = out
        self.columns = list(columns)  # the float32 outputs, for a file of no rows
        self.metadata = {k.encode(): v.encode() for k, v in (metadata or {}).items()}
        self.arrow = is_arrow(out)
        self.single = self.arrow or out.suffix.lower() == ".parquet"
        self.tmp = out.with_name(f".{out.name}.partial")
        self.parts = 0
        self._file: pq.ParquetWriter | pa.ipc.RecordBatchFileWriter | None = None
        self._sink: pa.NativeFile | None = None  # the Arrow file, which its writer leaves open
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
            if self._file is None and self.arrow:
                self._sink = pa.OSFile(str(self.tmp), "wb")
                self._file = pa.ipc.new_file(self._sink, table.schema)
            elif self._file is None:
                self._file = pq.ParquetWriter(self.tmp, table.schema, **_PARQUET)
            self._file.write_table(table)
        else:
            pq.write_table(table, self.tmp / f"part-{self.parts:05d}.parquet", **_PARQUET)
        self.parts += 1

    def _close_file(self) -> None:
        """The writer, then the Arrow file under it (its writer leaves it open)."""
        file, sink, self._file, self._sink = self._file, self._sink, None, None
        if file is not None:
            file.close()
        if sink is not None:
            sink.close()

    def close(self) -> None:
        self.wait()
        if self.parts == 0:
            # No chunk came (no row fell in the window): readers still need a file with the
            # columns and types a non-empty run writes, not a missing path.
            schema = {BY_INSTRUMENT: pl.String, BY_DATE: pl.Date}
            self._write(pl.DataFrame(schema=schema | dict.fromkeys(self.columns, pl.Float32))
                        .to_arrow())  # fmt: skip
        self._pool.shutdown()
        self._close_file()
        _remove(self.out)
        self.tmp.rename(self.out)

    def abort(self) -> None:
        # the failure being handled is the one to report, not a writer's that followed it
        with contextlib.suppress(Exception):
            self.wait()
        self._pool.shutdown()
        self._close_file()
        _remove(self.tmp)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
