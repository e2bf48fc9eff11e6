"""Where Quarry keeps local state."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["default_store", "quarry_home"]


def quarry_home() -> Path:
    """The directory for local state: ``$QUARRY_HOME``, or ``~/.quarry`` when unset."""
    home = os.environ.get("QUARRY_HOME")
    return Path(home).expanduser() if home else Path.home() / ".quarry"


def default_store() -> str | Path:
    """The store a command or workflow reads when none is given: ``$QUARRY_STORE``, else
    ``$QUARRY_HOME/store``."""
    return os.environ.get("QUARRY_STORE") or quarry_home() / "store"


def streams_dir() -> Path:
    """Where each running live stream keeps its status (``NAME.json``, rewritten every
    second), which the dashboard shows."""
    return quarry_home() / "streams"
