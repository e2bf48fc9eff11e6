"""The small market the workflow tests run on."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarry.data import Store, generate


@pytest.fixture
def market(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """60 instruments x 300 days with a strong planted reversal alpha; tracking under
    tmp_path."""
    monkeypatch.setenv("QUARRY_HOME", str(tmp_path / "home"))
    store = tmp_path / "store"
    generate(Store(store), 60, 300, seed=5, alpha_ic=0.15)
    return store
