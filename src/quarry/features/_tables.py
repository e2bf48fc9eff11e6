"""The files features are written to and read from, told apart by the name.

- ``FILE.parquet``: one Parquet file (LZ4), a row group per chunk of instruments. Smallest on
  disk; the format every tool reads.
- ``FILE.arrow`` (or ``.ipc``, ``.feather``): one Arrow IPC file (Feather v2, uncompressed), a
  record batch per chunk. Written in a third of Parquet's time and read in under half
  (Alpha158 at 300 x 2,500, one core: 0.28 s and 0.10-0.13 s, against 0.79-0.87 s and
  0.26-0.39 s; BENCHMARKS.md): for features the next step reads at once.
- any other path: a folder with a Parquet file per chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow as pa

__all__ = ["ARROW_SUFFIXES", "is_arrow", "read_frame", "read_schema"]

ARROW_SUFFIXES = (".arrow", ".ipc", ".feather")


def is_arrow(path: Path) -> bool:
    """Whether ``path`` names an Arrow IPC file (by its suffix, any case)."""
    return path.suffix.lower() in ARROW_SUFFIXES


def read_schema(path: Path) -> pa.Schema:
    """The schema (with its metadata) of a Parquet or Arrow IPC file; pyarrow's error for a
    file that is neither."""
    if is_arrow(path):
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).schema
    import pyarrow.parquet as pq

    return pq.read_schema(path)


def read_frame(files: Sequence[Path]) -> pl.DataFrame:
    """One frame from Parquet files (several read as one) or one Arrow IPC file."""
    if len(files) == 1 and is_arrow(files[0]):
        return pl.read_ipc(files[0])
    return pl.read_parquet(list(files) if len(files) > 1 else files[0])
