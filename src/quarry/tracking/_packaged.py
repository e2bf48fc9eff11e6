"""What tracking needs of a packaged model: it logs and loads one without importing the
models package, which sits above it and logs through it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import polars as pl

__all__ = ["Packaged"]


@runtime_checkable
class Packaged(Protocol):
    """What tracking needs of a packaged model (``quarry.models.PackagedModel`` is one)."""

    @property
    def model_type(self) -> str: ...

    @property
    def columns(self) -> tuple[str, ...]: ...

    def inputs(self) -> dict[str, str]: ...

    def score(self, frame: pl.DataFrame) -> Any: ...

    @property
    def row_wise(self) -> bool: ...

    def score_matrix(self, matrix: Any, names: Sequence[str]) -> Any: ...

    def matrix_scorer(self, names: Sequence[str], *, threads: int | None = None) -> Any: ...

    def describe(self) -> dict[str, Any]: ...
