"""VADER's compound score: a rule-based sentiment in [-1, 1] from vaderSentiment's lexicon,
with its rules for negation, boosters ("very"), capitals, "but" and exclamation marks.

The analyzer is pure Python (tens of microseconds a headline), so each distinct text is
scored once: templated headlines repeat, and a text's score depends on nothing else.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from quarry.text._packages import data_file, digest, missing, version

__all__ = ["Vader"]

PACKAGE = "vaderSentiment"
USER = "the 'vader' scorer"  # who needs the package, in messages


@functools.cache
def analyzer() -> Any:
    """vaderSentiment's analyzer, made once per process (it parses its lexicons)."""
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError:
        raise missing(USER, PACKAGE) from None
    return SentimentIntensityAnalyzer()


@functools.cache
def vader_version() -> str:
    """``vader-<package version>-<12 hex>``: the digest covers both lexicons the analyzer
    reads, the words' and the emojis' (an emoji is scored through its description)."""
    lexicons = data_file(USER, PACKAGE, "vader_lexicon.txt") + data_file(
        USER, PACKAGE, "emoji_utf8_lexicon.txt"
    )
    return f"vader-{version(USER, PACKAGE)}-{digest(lexicons)}"


class Vader:
    """The ``vader`` scorer: ``polarity_scores(text)["compound"]`` for each text."""

    name = "vader"

    @property
    def version(self) -> str:
        return vader_version()

    def score(self, texts: Sequence[str | None]) -> np.ndarray:
        """The compound score of each text (float64); 0.0 for None or empty."""
        polarity = analyzer().polarity_scores
        seen: dict[str, float] = {}
        out = np.zeros(len(texts), dtype=np.float64)
        for i, text in enumerate(texts):
            if not text:
                continue
            value = seen.get(text)
            if value is None:
                value = seen[text] = float(polarity(text)["compound"])
            out[i] = value
        return out
