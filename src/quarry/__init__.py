"""Quarry: a research platform for quantitative investment teams."""

from typing import TYPE_CHECKING

from quarry.exceptions import QuarryError

__all__ = ["QuarryError", "__version__", "connect"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("quarry")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


if TYPE_CHECKING:
    from quarry.data._remote import connect

    __version__: str
else:

    def __getattr__(name: str) -> object:
        # read on first use: importlib.metadata costs every command 40 ms at start-up
        if name == "__version__":
            globals()["__version__"] = value = _version()
            return value
        if name == "connect":  # the data service's client: Polars and Arrow, on first use
            from quarry.data._remote import connect

            globals()["connect"] = connect
            return connect
        raise AttributeError(f"module 'quarry' has no attribute {name!r}")
