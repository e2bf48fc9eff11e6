"""Quarry: a research platform for quantitative investment teams."""

from quarry.exceptions import QuarryError

__all__ = ["QuarryError", "__version__"]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("quarry")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()
