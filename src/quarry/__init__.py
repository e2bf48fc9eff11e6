"""Quarry: a research platform for quantitative investment teams."""

from typing import TYPE_CHECKING

from quarry.exceptions import QuarryError

__all__ = ["QuarryError", "__version__"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("quarry")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


if TYPE_CHECKING:
    __version__: str
else:

    def __getattr__(name: str) -> str:
        # read on first use: importlib.metadata costs every command 40 ms at start-up
        if name == "__version__":
            globals()["__version__"] = value = _version()
            return value
        raise AttributeError(f"module 'quarry' has no attribute {name!r}")
