"""What a story's score reads."""

from __future__ import annotations

import pytest

from quarry.exceptions import UsageError
from quarry.text import text_of


def test_the_title_then_a_space_and_the_body_when_there_is_one() -> None:
    titles = ["Profit falls", "Deal agreed", "Shares halted", None, "", None]
    bodies = [None, "Terms were not disclosed.", "", "Body only.", "Body only.", None]
    assert text_of(titles, bodies) == [
        "Profit falls",
        "Deal agreed Terms were not disclosed.",
        "Shares halted",
        "Body only.",
        "Body only.",
        "",
    ]
    assert text_of([], []) == []


def test_titles_and_bodies_must_pair_up() -> None:
    with pytest.raises(UsageError, match="2 titles but 1 bodies"):
        text_of(["a", "b"], ["x"])
