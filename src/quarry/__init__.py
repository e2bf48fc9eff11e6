"""Quarry: a research platform for quantitative investment teams."""

from quarry.exceptions import QuarryError

__all__ = ["QuarryError", "__version__"]

__version__ = "0.1.0"
