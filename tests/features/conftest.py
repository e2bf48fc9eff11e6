"""Fixtures for the feature tests."""

from __future__ import annotations

import polars as pl
import pytest

from tests.features.helpers import make_frame


@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame()
