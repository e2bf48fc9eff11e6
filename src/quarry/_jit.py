"""numba for every compiled kernel of Quarry, loaded without SciPy's linear algebra.

A command that computes pays numba's start-up once: its import, then, at the first call of a
kernel, its registries of typing and lowering. Loading them, numba checks for BLAS by
importing SciPy's linear algebra (so that a kernel may call ``np.dot`` or ``np.linalg``),
which brings SciPy's array-API layer and ``numpy.f2py``: 150 ms of every such command on one
core here, for a module no kernel of Quarry uses.

So the first import of this module hides ``scipy.linalg.cython_blas`` from the import system
while numba loads and fills its registries, then gives it back and tells numba that BLAS is
there after all: a kernel's ``np.dot`` or ``np.linalg`` loads it on first use, as numba
checks again when it types them, and ``np.correlate``/``np.convolve`` use it as before. The
import lock is held meanwhile, so that no other thread's import sees the hidden module. A
process that imported numba before Quarry keeps numba as it was.

Measured 2026-12-02, one core, medians of 5 interleaved: numba's import and first cached
call 0.59 s without this, 0.45 s with it. (Hiding cffi as well saved 50 ms more, but numba
then refused cffi calls in every kernel of the process, a user's own included.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator

__all__ = ["njit", "prange"]

UNUSED = ("scipy.linalg.cython_blas",)


@contextlib.contextmanager
def _hidden(names: tuple[str, ...]) -> Iterator[None]:
    """``import name`` fails inside (a ``None`` in ``sys.modules`` makes the import system
    raise ModuleNotFoundError at once, without loading the package's parents) for each name
    not imported already; each is given back on the way out, whatever happened."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


@contextlib.contextmanager
def _import_lock() -> Iterator[None]:
    """The interpreter's import lock (re-entrant for this thread): another thread's import
    of a new module waits until the hiding is over."""
    import _imp

    _imp.acquire_lock()
    try:
        yield
    finally:
        _imp.release_lock()


def _load() -> None:
    if "numba" in sys.modules:
        return
    with _import_lock(), _hidden(UNUSED):
        import numba  # noqa: F401

        # The registries load at a dispatcher's first compile or cache load, later than this
        # import; filled now, they load under the hiding above. Should numba move these, it
        # only loads as before.
        with contextlib.suppress(ImportError, AttributeError):
            from numba.core.registry import cpu_target

            cpu_target.typing_context.refresh()
            cpu_target.target_context.refresh()
    with contextlib.suppress(ImportError, AttributeError):
        from numba.np import arraymath

        # numba noted BLAS as missing while it was hidden; it is there (loaded when used)
        arraymath._HAVE_BLAS = importlib.util.find_spec("scipy") is not None


_load()

from numba import njit, prange  # noqa: E402
