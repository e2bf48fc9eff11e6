"""Arrow tables as the service sends them: an Arrow IPC stream, zstd-compressed, a record
batch at a time; or a Parquet file (zstd)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Arrow loads with the first answer, not with the server
    import pyarrow as pa

__all__ = ["ARROW", "BATCH_ROWS", "PARQUET", "media_type", "to_ipc", "to_parquet"]

ARROW = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"
_PARQUET_TYPES = (PARQUET, "application/x-parquet", "application/parquet")
# Rows a record batch: large enough that a batch's header is nothing beside it, small
# enough that a reader starts on the first batch while the rest arrive.
BATCH_ROWS = 128 * 1024


def media_type(accept: str | None) -> str:
    """Parquet when the ``Accept`` header asks for it, else an Arrow IPC stream."""
    wanted = [part.split(";")[0].strip().lower() for part in (accept or "").split(",")]
    return PARQUET if any(w in _PARQUET_TYPES for w in wanted) else ARROW


def to_ipc(table: pa.Table) -> bytes:
    """``table`` as an Arrow IPC stream of zstd-compressed record batches."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            writer.write_batch(batch)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def to_parquet(table: pa.Table) -> bytes:
    """``table`` as one Parquet file (zstd)."""
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd", row_group_size=BATCH_ROWS)
    return out.getvalue()
