"""A small workflow on a small market, for the workflow and gate tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

NOISE = "$volume / Mean($volume, 5)"
REVERSAL = "-($close / Ref($close, 5) - 1)"  # the planted alpha
MOMENTUM = "$close / Ref($close, 20) - 1"  # weakly related to it


def small_spec(store: Path, **changes: Any) -> dict[str, Any]:
    """A workflow over ``store`` (see the ``market`` fixture); each change replaces a
    section's keys (a mapping) or the section (anything else)."""
    spec: dict[str, Any] = {
        "name": "small",
        "data": {"store": str(store)},
        "features": {"set": "none", "extra": {"NOISE": NOISE, "REV5": REVERSAL, "MOM20": MOMENTUM}},
        "model": {"type": "lightgbm", "params": {"num_boost_round": 30}, "seed": 0},
        "segments": {
            "train": "2015-01-02:2015-08-31",
            "valid": "2015-09-08:2015-10-30",
            "test": "2015-11-06:2016-02-26",
        },
        "backtest": {"topk": 8, "n_drop": 2},
        "tracking": {
            "experiment": "small",
            "register": "small",
            "description": "The small workflow's model, for the tests.",
        },
    }
    for key, value in changes.items():
        spec[key] = value if not isinstance(value, dict) else {**spec.get(key, {}), **value}
    return spec


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path
