"""Whole-panel passes by blocks of rows (``quarry._memory.in_row_blocks``): every row once,
blocks of the asked size, a block's error raised."""

from __future__ import annotations

import threading

import pytest

from quarry._memory import in_row_blocks


@pytest.mark.parametrize(
    ("rows", "width", "cells"), [(10, 4, 8), (10, 4, 3), (7, 1, 100), (0, 5, 10)]
)
def test_every_row_is_worked_once_in_blocks_of_the_asked_cells(
    rows: int, width: int, cells: int
) -> None:
    seen: list[slice] = []
    lock = threading.Lock()

    def work(block: slice) -> None:
        with lock:
            seen.append(block)

    in_row_blocks(work, rows, width, cells=cells)
    covered = sorted(r for block in seen for r in range(block.start, block.stop))
    assert covered == list(range(rows))
    step = max(1, cells // width)
    assert all(0 < block.stop - block.start <= step for block in seen)


def test_a_blocks_error_is_raised() -> None:
    def work(block: slice) -> None:
        if block.start >= 4:
            raise ValueError(f"rows {block.start}-{block.stop}: bad")

    with pytest.raises(ValueError, match="rows 4-6: bad"):
        in_row_blocks(work, 8, 1, cells=2)
