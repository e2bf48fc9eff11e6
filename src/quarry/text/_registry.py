"""Scorers by name: ``lm`` and ``vader`` built in, others added with ``register``."""

from __future__ import annotations

import difflib
import re

from quarry.exceptions import UsageError
from quarry.text._lm import LoughranMcDonald
from quarry.text._scorer import Scorer
from quarry.text._vader import Vader

__all__ = ["get_scorer", "register", "scorer_names"]

# a name is stored beside scores (a column, a field's key), so it is kept plain
NAME = re.compile(r"[a-z][a-z0-9]*")

_SCORERS: dict[str, Scorer] = {}


def register(scorer: Scorer, *, replace: bool = False) -> Scorer:
    """Make ``scorer`` available as ``get_scorer(scorer.name)``; returns it.

    The name is lowercase letters and digits, starting with a letter. A name already taken
    is an error unless ``replace``: two scorers under one name would give one name two
    meanings in stored scores.
    """
    name = getattr(scorer, "name", None)
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UsageError(
            f"a scorer's name must be lowercase letters and digits, starting with a letter "
            f"(like 'lm'), not {name!r}"
        )
    if not callable(getattr(scorer, "score", None)):
        raise UsageError(f"scorer {name!r} has no score(texts) method")
    if name in _SCORERS and not replace and _SCORERS[name] is not scorer:
        raise UsageError(f"a scorer named {name!r} is already registered (pass replace=True)")
    _SCORERS[name] = scorer
    return scorer


def get_scorer(name: str) -> Scorer:
    """The scorer registered as ``name``.

    >>> get_scorer("lm").name
    'lm'
    """
    scorer = _SCORERS.get(name)
    if scorer is None:
        known = scorer_names()
        close = difflib.get_close_matches(str(name).lower(), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"no text scorer named {name!r}{hint}; known: {', '.join(known)}")
    return scorer


def scorer_names() -> list[str]:
    """The registered scorers' names, sorted."""
    return sorted(_SCORERS)


register(LoughranMcDonald())
register(Vader())
