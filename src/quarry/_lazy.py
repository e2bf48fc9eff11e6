"""A package's public names imported on first use (PEP 562), not with the package.

``import quarry.data`` then costs nothing until a name is used, so a command that only parses
its arguments or prints its help never loads Polars, Delta Lake, Arrow or MLflow. The package
lists its names for type checkers under ``TYPE_CHECKING`` and in ``__all__``, and maps each to
its module here; ``tests/test_lazy.py`` keeps the three in step.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose name ``N`` lives in its
    submodule ``homes[N]``."""
    module = sys.modules[package]

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(module, name, value)  # once: later lookups do not come here
        return value

    def dir_() -> list[str]:
        return sorted({*vars(module), *homes})

    return getattr_, dir_
