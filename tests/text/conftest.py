"""The text scorers keep what they read once per process (word lists, the analyzer, the
embedding's weights); a test that changes what they would read starts and ends with none."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quarry.text import _embed, _lm, _vader


def clear_caches() -> None:
    _lm.lexicon.cache_clear()
    _vader.analyzer.cache_clear()
    _vader.vader_version.cache_clear()
    _embed.embedder.cache_clear()


@pytest.fixture
def fresh() -> Iterator[None]:
    """Nothing cached before the test, and nothing it cached (e.g. a patched word list) after."""
    clear_caches()
    yield
    clear_caches()
