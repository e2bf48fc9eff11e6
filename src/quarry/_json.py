"""Strict JSON for every file and output Quarry writes: JSON has no NaN or infinity, so an
undefined figure (the IC of constant scores, say) is written as null."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["digest", "dumps", "strict_json"]


def strict_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None (in mappings, lists and tuples, numpy
    scalars included), ready for ``json.dumps(..., allow_nan=False)``."""
    if isinstance(value, Mapping):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        value = value.item()  # a numpy scalar (numpy is not imported for this: CLI start-up)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as strict JSON text (anything else JSON lacks, such as a date, as text)."""
    return json.dumps(strict_json(value), indent=indent, default=str, allow_nan=False)


def digest(parts: Any) -> str:
    """A stable short hash of plain data (keys sorted; dates, paths and the like as text):
    the key of a cache entry."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]
