"""numba loaded for Quarry's kernels without SciPy's BLAS (``quarry._jit``): the kernels give
the same values, nothing stays hidden afterwards, and numba's linear algebra and cffi support
are as they would be without Quarry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from quarry._jit import _hidden

WATCHED = ["scipy.linalg", "scipy.linalg.cython_blas"]

_KERNEL_THEN_LINALG = """
import json, sys
import numpy as np
{before}
from quarry.features._kernels import NO_STATE, rolling_sum
x = np.arange(12.0).reshape(2, 6)
out = np.empty_like(x)
rolling_sum(x, 3, np.zeros(2, np.int64), np.full(2, 6, np.int64), 1, 0, NO_STATE, False, out)
loaded = [m for m in {watched!r} if sys.modules.get(m) is not None]
left_hidden = [m for m in {watched!r} if m in sys.modules and sys.modules[m] is None]
from numba.core.typing import cffi_utils
from numba.np import arraymath
noted = {{"cffi": cffi_utils.SUPPORTED, "blas": arraymath._HAVE_BLAS}}
import scipy.linalg.cython_blas  # given back: importable as ever
from numba import njit

@njit
def matmul(a, b):
    return np.dot(a, b)

@njit
def inner(a, b):
    return np.dot(a, b)

a = np.arange(6.0).reshape(2, 3)
b = np.arange(12.0).reshape(3, 4)
v = np.array([1.5, -2.0, 3.25])
print(json.dumps({{
    "sums": out.tolist(), "loaded": loaded, "left_hidden": left_hidden, "noted": noted,
    "matmul": np.abs(matmul(a, b) - a @ b).max(), "inner": inner(v, v) - float(v @ v),
}}))
"""


def _probe(before: str = "") -> dict:
    code = textwrap.dedent(_KERNEL_THEN_LINALG).format(before=before, watched=WATCHED)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sums(x: list[list[float]], window: int) -> list[list[float]]:
    """Trailing sums of up to ``window`` values along each row."""
    return [[sum(row[max(0, i + 1 - window) : i + 1]) for i in range(len(row))] for row in x]


def test_a_kernel_runs_without_scipy_blas_and_linear_algebra_still_works() -> None:
    got = _probe()
    assert got["loaded"] == []
    assert got["left_hidden"] == []
    # what numba concluded about the machine is what it concludes without Quarry
    assert got["noted"] == _probe(before="import numba")["noted"] == {"cffi": True, "blas": True}
    expected = _sums([[float(v) for v in range(6)], [float(v) for v in range(6, 12)]], 3)
    assert got["sums"] == expected
    assert got["matmul"] == 0.0  # BLAS loaded on demand, as numba checks again at typing
    assert got["inner"] == 0.0  # a vector's dot, through BLAS again


def test_numba_imported_before_quarry_is_left_as_it_was() -> None:
    got = _probe(before="import numba")
    # numba's own first load brings SciPy's BLAS with it; Quarry hid nothing
    assert "scipy.linalg.cython_blas" in got["loaded"]
    assert got["left_hidden"] == []
    assert got["matmul"] == 0.0


def test_hiding_gives_back_every_name_and_leaves_loaded_modules_alone() -> None:
    name, loaded = "quarry_test_never_a_module", "json"
    before = sys.modules["json"]
    with pytest.raises(RuntimeError), _hidden((name, loaded)):
        assert sys.modules[name] is None
        with pytest.raises(ModuleNotFoundError):
            __import__(name)
        assert sys.modules[loaded] is before
        raise RuntimeError("the hidden names come back all the same")
    assert name not in sys.modules
    assert sys.modules[loaded] is before
