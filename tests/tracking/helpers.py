"""Model metadata for the tests that register versions by hand."""

from __future__ import annotations

from typing import Any


def given_metadata(**changes: Any) -> dict[str, Any]:
    """What a caller of ``register`` gives (it fills in the name, version, run and metrics);
    each change replaces a field, None removes it."""
    metadata: dict[str, Any] = {
        "project": "research",
        "description": "A model registered by a test.",
        "authors": ["ana", "ben"],
        "licence": "proprietary",
        "model_type": "linear",
        "label": "Ref($close, -2)/Ref($close, -1) - 1",
        "features": [
            {"name": "A", "expression": "$close / Ref($close, 1) - 1"},
            {"name": "B", "expression": "Mean($volume, 5)"},
        ],
        "training_window": {"start": "2020-01-01", "end": "2020-06-30"},
        "data": {
            "store": "/data/store",
            "as_of": None,
            "universe": None,
            "commits": {
                "bars": {"version": 3, "committed_at": "2020-07-01T18:00:00+00:00"},
                "corporate_actions": None,
                "fundamentals": {"version": 0, "committed_at": "2020-07-01T18:00:01.5+00:00"},
            },
        },
        "workflow": {"path": "/work/w.yaml", "sha256": "0" * 64},
    }
    for key, value in changes.items():
        if value is None:
            metadata.pop(key, None)
        else:
            metadata[key] = value
    return metadata
