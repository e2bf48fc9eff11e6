"""Scorers by name."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from quarry.exceptions import UsageError
from quarry.text import _registry, get_scorer, register, scorer_names


class Length:
    """A scorer for the tests: the number of characters."""

    def __init__(self, name: str = "length") -> None:
        self.name = name
        self.version = "length-1"

    def score(self, texts: Sequence[str | None]) -> np.ndarray:
        return np.array([len(t or "") for t in texts], dtype=np.float64)


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The built-in registry, restored after the test."""
    monkeypatch.setattr(_registry, "_SCORERS", dict(_registry._SCORERS))


def test_lm_and_vader_are_registered() -> None:
    assert scorer_names() == ["lm", "vader"]
    assert get_scorer("lm").name == "lm" and get_scorer("vader").name == "vader"
    assert get_scorer("lm") is get_scorer("lm")
    assert get_scorer("lm").version == get_scorer("lm").version


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("vadr", " (did you mean 'vader'?)"),
        ("LM", " (did you mean 'lm'?)"),
        ("sentiment", ""),
    ],
)
def test_an_unknown_name_lists_the_known_ones_and_the_closest(name: str, hint: str) -> None:
    with pytest.raises(UsageError) as caught:
        get_scorer(name)
    message = str(caught.value)
    assert message == f"no text scorer named {name!r}{hint}; known: lm, vader"
    assert "\n" not in message


def test_a_registered_scorer_is_found_by_name(registry: None) -> None:
    scorer = Length()
    assert register(scorer) is scorer
    assert scorer_names() == ["length", "lm", "vader"]
    assert get_scorer("length") is scorer
    np.testing.assert_array_equal(get_scorer("length").score(["abc", None]), [3.0, 0.0])
    register(scorer)  # the same scorer again changes nothing
    with pytest.raises(UsageError, match="'length' is already registered"):
        register(Length())
    other = Length()
    register(other, replace=True)
    assert get_scorer("length") is other


@pytest.mark.parametrize("name", ["Length", "2x", "len-gth", "len_gth", "", "lm ", "é"])
def test_a_name_must_be_lowercase_letters_and_digits(registry: None, name: str) -> None:
    with pytest.raises(UsageError, match=f"lowercase letters and digits.*not {name!r}"):
        register(Length(name))
    assert scorer_names() == ["lm", "vader"]


def test_a_scorer_must_have_a_name_and_a_score_method(registry: None) -> None:
    class Nameless:
        version = "1"

        def score(self, texts: Sequence[str | None]) -> np.ndarray:
            return np.zeros(len(texts))

    with pytest.raises(UsageError, match="not None"):
        register(Nameless())  # type: ignore[arg-type]
    thing = Length("noscore")
    thing.score = None  # type: ignore[assignment,method-assign]
    with pytest.raises(UsageError, match="'noscore' has no score"):
        register(thing)
