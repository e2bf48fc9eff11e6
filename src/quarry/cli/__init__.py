"""The ``quarry`` command line: a thin layer over the library."""

from quarry.cli._main import app, main

__all__ = ["app", "main"]
