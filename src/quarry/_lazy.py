"""A package's public names imported on first use (PEP 562), not with the package.

``import quarry.data`` then costs nothing until a name is used, so a command that only parses
its arguments or prints its help never loads Polars, Delta Lake, Arrow or MLflow. The package
lists its names for type checkers under ``TYPE_CHECKING`` and in ``__all__``, and maps each to
its submodule here; ``tests/test_lazy.py`` keeps the three in step.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports", "homes"]


def homes(modules: Mapping[str, str]) -> dict[str, str]:
    """Each public name and its submodule, from submodule -> its names (space-separated)."""
    return {name: home for home, names in modules.items() for name in names.split()}


def exports(
    package: str, modules: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose submodule ``M`` defines the
    names ``modules[M]`` (space-separated)."""
    module = sys.modules[package]
    where = homes(modules)

    def getattr_(name: str) -> Any:
        home = where.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(module, name, value)  # once: later lookups do not come here
        return value

    def dir_() -> list[str]:
        return sorted({*vars(module), *where})

    return getattr_, dir_
