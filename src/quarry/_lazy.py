"""A package's public names imported on first use (PEP 562), not with the package.

``import quarry.data`` then costs nothing until a name is used, so a command that only parses
its arguments or prints its help never loads Polars, Delta Lake, Arrow or MLflow. The package
lists its names for type checkers under ``TYPE_CHECKING`` and in ``__all__``, and maps each to
its submodule here; ``tests/test_lazy.py`` keeps the three in step.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["exports", "homes", "module"]


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


class _Deferred(ModuleType):
    """Stands for a module until one of its attributes is asked for, then imports it (the
    import system's own locks make a first use from two threads safe, which the standard
    library's ``LazyLoader`` is not before Python 3.12) and keeps its names."""

    def __getattr__(self, attr: str) -> Any:
        real = importlib.import_module(self.__name__)
        vars(self).update(vars(real))  # later lookups find the names without coming here
        return getattr(real, attr)


def module(name: str) -> ModuleType:
    """Module ``name``, imported at the first use of one of its attributes rather than now:
    for a module that is costly to load and used only on some paths through its importer,
    e.g. the feature engine's compiled kernels, which parsing and checking an expression
    never touch."""
    if name in sys.modules:
        return sys.modules[name]
    if importlib.util.find_spec(name) is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    return _Deferred(name)
