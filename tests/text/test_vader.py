"""The ``vader`` scorer is vaderSentiment's compound score, text for text."""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import vaderSentiment
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from quarry.text import _vader, get_scorer

TEXTS = [
    "Acme beats estimates, raises full-year outlook",
    "Acme misses estimates and cuts its dividend",
    "Acme beats estimates, raises full-year outlook",  # templated headlines repeat
    "Regulator fines bank $2bn over money laundering failures!!!",
    "Shares are NOT good at all :(",
    "The results were good, but the outlook is terrible",
    "Company announces date of annual meeting",
    "Great quarter 😀",
    "Acme misses estimates and cuts its dividend",
    "",
    None,
    "   ",
]


def test_scores_are_vadersentiments_own_compound_scores() -> None:
    own = SentimentIntensityAnalyzer()
    expected = [own.polarity_scores(t)["compound"] if t else 0.0 for t in TEXTS]
    got = get_scorer("vader").score(TEXTS)
    assert got.dtype == np.float64 and got.shape == (len(TEXTS),)
    np.testing.assert_array_equal(got, np.array(expected))
    assert got[0] == got[2] and got[1] == got[8]


def test_each_distinct_text_is_scored_once(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    analyzer = _vader.analyzer()
    calls: list[str] = []
    real = analyzer.polarity_scores

    def counted(text: str) -> Any:
        calls.append(text)
        return real(text)

    monkeypatch.setattr(analyzer, "polarity_scores", counted)
    get_scorer("vader").score(TEXTS * 3)
    assert sorted(calls) == sorted({t for t in TEXTS if t})


@pytest.mark.parametrize(
    ("text", "sign"),
    [
        ("Acme posts record profit, strong growth and an excellent outlook", 1),
        ("Acme wins approval; investors cheer great results", 1),
        ("Acme crashes after fraud scandal and terrible losses", -1),
        ("CEO arrested; company faces lawsuit and bankruptcy fears", -1),
    ],
)
def test_clearly_good_and_bad_headlines_have_their_sign(text: str, sign: int) -> None:
    assert np.sign(get_scorer("vader").score([text])[0]) == sign


def test_the_version_names_the_package_and_its_lexicons() -> None:
    v = get_scorer("vader").version
    assert re.fullmatch(r"vader-(.+)-[0-9a-f]{12}", v)
    assert v.split("-")[1] == importlib.metadata.version("vaderSentiment")
    # the digest covers both files the analyzer reads: the words' lexicon and the emojis'
    home = Path(vaderSentiment.__file__).parent
    files = ("vader_lexicon.txt", "emoji_utf8_lexicon.txt")
    lexicons = b"".join((home / name).read_bytes() for name in files)
    assert v.endswith("-" + hashlib.sha256(lexicons).hexdigest()[:12])
    assert get_scorer("vader").version == v
