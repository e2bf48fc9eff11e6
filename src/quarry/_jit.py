"""numba for every compiled kernel of Quarry, loaded without the parts no kernel of ours uses.

A command that computes pays numba's start-up once: its import, then, at the first call of a
kernel, its registries of typing and lowering. Those registries also load SciPy's linear
algebra (so that a kernel may call ``np.dot`` or ``np.linalg``; numba checks for BLAS as it
loads) and cffi (so that a kernel may call C through it). No kernel of Quarry does either, and
the two cost 0.2 s of every such command on one core here (0.57 s to 0.37 s for import and
first call, measured 2026-12-02), a tenth of a feature computation's whole process.

So the first import of this module hides the two from the import system while numba loads and
fills its registries, then gives them back. Afterwards ``np.dot`` of two vectors in a kernel
falls back to numba's own loop (correct, unhurried); matrices and ``np.linalg`` still load
BLAS on first use, as numba checks again then. A process that imported numba before Quarry
keeps numba as it was: nothing is hidden once numba is loaded.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

__all__ = ["njit", "prange"]

# Modules numba loads with its registries for features we do not use: SciPy's BLAS (which
# brings scipy.linalg and SciPy's array-API layer, 150 ms) and cffi (its C parser, 50 ms).
UNUSED = ("scipy.linalg.cython_blas", "cffi")


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


def _load() -> None:
    if "numba" in sys.modules:
        return
    with _hidden(UNUSED):
        import numba  # noqa: F401

        # The registries load at a dispatcher's first compile or cache load, later than this
        # import; filled now, they load under the hiding above. Should numba move these, it
        # only loads as before.
        with contextlib.suppress(ImportError, AttributeError):
            from numba.core.registry import cpu_target

            cpu_target.typing_context.refresh()
            cpu_target.target_context.refresh()


_load()

from numba import njit, prange  # noqa: E402
