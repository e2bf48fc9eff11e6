"""Memory habits for many large short-lived panels.

``in_row_blocks``: a whole-panel NumPy pass as passes over blocks of rows, on threads.

``reuse_freed_memory``: keep freed panels' memory for the next panel instead of handing it
back to the OS.

glibc's malloc serves each block above a threshold (128 KiB, rising to at most 32 MiB) with
a fresh mmap and unmaps it on free, so every new panel of a feature plan page-faults all
its pages in again: with hundreds of panels of a few MB each, that was more than half the
time of Alpha158 (2.7 s of 300 instruments x 2,500 days, 1.2 s with this). Raising the
thresholds makes malloc reuse freed blocks; the process's peak RSS is unchanged, it just
does not shrink back after the work.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["BLOCK_CELLS", "in_row_blocks", "reuse_freed_memory", "small_pages"]

# Cells per block of rows (65 rows at 16,000 columns): with a pass's temporaries at up to
# about 120 bytes a cell, 125 MB a block.
BLOCK_CELLS = 1 << 20
_THREADS = 4  # blocks in flight at most, whatever the machine's cores

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_MMAP_MAX = 32 * 1024 * 1024  # glibc's ceiling for the mmap threshold on 64-bit


@functools.cache
def reuse_freed_memory() -> bool:
    """Tune glibc's malloc once per process; False where there is no glibc (no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_MAX) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    ok &= mallopt(_M_TOP_PAD, 64 * 1024 * 1024) == 1
    return bool(ok)


@contextlib.contextmanager
def small_pages() -> Iterator[None]:
    """Ask numpy not to request transparent huge pages for new arrays meanwhile.

    numpy advises the kernel to back large arrays with huge pages; where the kernel then
    compacts memory on the fault (THP defrag "madvise", as on this project's machines), each
    new panel stalls. Measured on Alpha158, 300 instruments x 2,500 days in a fresh process:
    3.2-3.9 s with the advice, 2.3 s without.
    """
    core = getattr(np, "_core", None) or getattr(np, "core", None)
    setter = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if setter is None:
        yield
        return
    before = setter(False)
    try:
        yield
    finally:
        setter(before)


def in_row_blocks(
    work: Callable[[slice], None], rows: int, width: int, *, cells: int | None = None
) -> None:
    """``work(rows_slice)`` over blocks of about ``cells`` cells of a ``rows`` x ``width``
    panel, on as many threads as this process has cores (at most four).

    One NumPy expression over a whole 40 M-cell panel makes temporaries of its size, each a
    fresh mapping faulted in page by page, on one core; by blocks they stay small, are reused,
    and run on every core (NumPy releases the GIL). ``work`` writes its block's results into
    arrays made beforehand; blocks must not depend on each other's results."""
    step = max(1, (cells or BLOCK_CELLS) // max(width, 1))
    blocks = [slice(i, min(i + step, rows)) for i in range(0, rows, step)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = min(cores or 1, _THREADS, len(blocks))
    if threads <= 1:
        for block in blocks:
            work(block)
        return
    with ThreadPoolExecutor(threads) as pool:
        for done in pool.map(work, blocks):  # re-raises a block's error
            del done
