"""Strict JSON: what Quarry writes parses with a strict parser, undefined figures as null."""

from __future__ import annotations

import json
import math
from datetime import date

import numpy as np

from quarry._json import dumps


def _refuse(token: str) -> None:
    raise AssertionError(f"{token} is not JSON")


def test_undefined_figures_are_null_wherever_they_are() -> None:
    value = {
        "ic": math.nan,
        "per_segment": {"test": {"rank_ic": np.float64("nan"), "sharpe": -np.inf}},
        "rules": [{"challenger": math.inf, "champion": 0.5}],
        "window": (date(2021, 1, 4), np.int64(3)),
    }
    parsed = json.loads(dumps(value), parse_constant=_refuse)
    assert parsed == {
        "ic": None,
        "per_segment": {"test": {"rank_ic": None, "sharpe": None}},
        "rules": [{"challenger": None, "champion": 0.5}],
        "window": ["2021-01-04", 3],
    }


def test_a_numpy_array_is_written_as_text_not_refused() -> None:
    # scalars become numbers; anything else numpy (an array) keeps the default's text
    assert json.loads(dumps({"w": np.zeros(2), "n": np.int64(3)})) == {"w": "[0. 0.]", "n": 3}
