"""Packages whose public names are imported on first use (``quarry._lazy``): every name is
where the package says, and importing the package loads nothing heavy."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from quarry._lazy import homes, module

LAZY = [
    "quarry.backtest",
    "quarry.data",
    "quarry.features",
    "quarry.tracking",
    "quarry.portfolio",
    "quarry.text",
]


@pytest.mark.parametrize("name", LAZY)
def test_every_public_name_resolves_to_its_home_module(name: str) -> None:
    package = importlib.import_module(name)
    where = homes(package._MODULES)
    assert set(where) == set(package.__all__)  # a name added to one is added to the other
    assert len(where) == sum(len(n.split()) for n in package._MODULES.values())  # none twice
    for public, home in where.items():
        defined = getattr(importlib.import_module(f"{name}.{home}"), public)
        assert getattr(package, public) is defined, public
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match=f"module '{name}' has no attribute 'Stor'"):
        package.Stor  # noqa: B018


def test_importing_the_packages_loads_nothing_heavy() -> None:
    heavy = ("polars", "pyarrow", "deltalake", "numpy", "numba", "mlflow", "jsonschema")
    code = (
        "import sys, quarry, quarry.data, quarry.tracking, quarry.backtest, quarry.portfolio\n"
        "from quarry.backtest import BacktestConfig\n"
        "from quarry.portfolio import OptimizerConfig\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # the first use imports what it needs
    code = "import sys, quarry.data as d; d.Store; print('deltalake' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_a_deferred_module_is_imported_at_its_first_use_and_then_is_the_module() -> None:
    code = (
        "import sys\n"
        "from quarry._lazy import module\n"
        "k = module('quarry.features._kernels')\n"
        "before = 'numba' in sys.modules or 'quarry.features._kernels' in sys.modules\n"
        "f = k.rolling_sum\n"
        "import quarry.features._kernels as real\n"
        "print(before, f is real.rolling_sum, 'numba' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"]
    with pytest.raises(ModuleNotFoundError, match=r"quarry\.no_such"):
        module("quarry.no_such")
