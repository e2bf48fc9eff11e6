"""What every scorer of text is, and the text a story's score reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from quarry.exceptions import UsageError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Scorer", "text_of"]


class Scorer(Protocol):
    """A pure function of text: one float per text, the same for the same text and version.

    ``name`` is the scorer's key in the registry (``get_scorer``); ``version`` changes whenever
    a score could (new word list, new package, new tokenisation), so a stored score can say
    what made it and be recomputed when that changes.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def score(self, texts: Sequence[str | None]) -> np.ndarray:
        """float64, one per text, in order; a None or empty text scores 0.0."""
        ...


def text_of(titles: Sequence[str | None], bodies: Sequence[str | None]) -> list[str]:
    """What a story's score reads: its title, then a space and its body when it has one.

    A null or empty part is left out (a story with neither reads ``""``).

    >>> text_of(["Profit falls", "Deal agreed"], [None, "Terms were not disclosed."])
    ['Profit falls', 'Deal agreed Terms were not disclosed.']
    """
    if len(titles) != len(bodies):
        raise UsageError(f"text_of: {len(titles)} titles but {len(bodies)} bodies")
    return [" ".join(part for part in pair if part) for pair in zip(titles, bodies, strict=True)]
