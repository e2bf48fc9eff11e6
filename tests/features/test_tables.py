"""Feature files told apart by their names (``quarry.features._tables``): Parquet and Arrow
IPC read back to the same frame and metadata, and a file that is not what its name says is
pyarrow's error, not a wrong frame."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from quarry.features._tables import is_arrow, read_frame, read_schema


def _frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "instrument": ["A", "A", "B"],
            "date": pl.Series(["2020-01-02", "2020-01-03", "2020-01-02"]).str.to_date(),
            "x": pl.Series([1.5, None, -2.0], dtype=pl.Float32),
        }
    )


def _write(frame: pl.DataFrame, path: Path, meta: dict[bytes, bytes]) -> None:
    table = frame.to_arrow().replace_schema_metadata(meta)
    if is_arrow(path):
        with pa.ipc.new_file(str(path), table.schema) as writer:
            writer.write_table(table.slice(0, 2))  # two record batches, as two chunks
            writer.write_table(table.slice(2))
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, path)


@pytest.mark.parametrize(
    ("name", "arrow"),
    [("f.parquet", False), ("f.arrow", True), ("f.IPC", True), ("f.feather", True), ("f", False)],
)
def test_either_format_reads_back_the_same_frame_and_metadata(
    tmp_path: Path, name: str, arrow: bool
) -> None:
    assert is_arrow(Path(name)) == arrow
    path = tmp_path / name
    frame, meta = _frame(), {b"quarry.label": b"Ref($close, -1)"}
    _write(frame, path, meta)
    assert read_frame([path]).equals(frame)
    assert read_schema(path).metadata == meta


def test_several_parquet_files_read_as_one(tmp_path: Path) -> None:
    frame = _frame()
    _write(frame.head(1), tmp_path / "a.parquet", {})
    _write(frame.tail(2), tmp_path / "b.parquet", {})
    assert read_frame([tmp_path / "a.parquet", tmp_path / "b.parquet"]).equals(frame)


def test_a_parquet_file_named_arrow_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.arrow"
    _frame().write_parquet(path)
    with pytest.raises(pa.ArrowInvalid):
        read_schema(path)
