"""Scorers of text: pure functions of a headline, for the data layer's text fields and the
models' trained head.

- ``Scorer``: ``name``, ``version`` and ``score(texts)``, one float64 a text. Registered by
  name (``get_scorer``, ``scorer_names``, ``register``):

  - ``lm``: Loughran-McDonald's finance word lists, polarity ``(pos - neg) / (pos + neg)``
    of the words matched whole, vectorised with Polars (a million headlines in about a
    second);
  - ``vader``: VADER's compound score in [-1, 1] (pure Python, each distinct text once).

- ``embedder()``: the process's ``Embedder``, WordLlama's 256-d sentence vectors (unit
  length, float32), from the weights inside its wheel; nothing is downloaded.

- ``text_of(titles, bodies)``: what a story's score reads, the title and then the body.

A scorer's ``version`` names its word list or weights (a digest) and its package, so a score
stored with it can be recomputed when either changes. The packages behind them are the
optional extra ``quarry[text]``, imported at first use; without one, using its scorer raises
``UsageError`` saying what to install. ``import quarry.text`` loads none of them.
"""

from typing import TYPE_CHECKING

from quarry._lazy import exports

if TYPE_CHECKING:  # imported on first use (``quarry._lazy``)
    from quarry.text._embed import Embedder, embedder
    from quarry.text._registry import get_scorer, register, scorer_names
    from quarry.text._scorer import Scorer, text_of

# each submodule and the public names it defines
_MODULES = {
    "_embed": "Embedder embedder",
    "_registry": "get_scorer register scorer_names",
    "_scorer": "Scorer text_of",
}

__all__ = [
    "Embedder",
    "Scorer",
    "embedder",
    "get_scorer",
    "register",
    "scorer_names",
    "text_of",
]

if not TYPE_CHECKING:  # type checkers read the imports above, and flag a misspelled name
    __getattr__, __dir__ = exports(__name__, _MODULES)
