"""The operators of the expression language: their arity and kind.

Kinds: ``elementwise`` (row by row), ``rolling`` (x, N: a window over each instrument's
history), ``pair`` (x, y, N: a window over two series), ``ref`` (x, N: shift by N rows,
negative N reads the future), ``cross`` (per date across instruments).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["OPERATORS", "OpSpec"]

Kind = Literal["elementwise", "rolling", "pair", "ref", "cross"]


@dataclass(frozen=True)
class OpSpec:
    name: str
    kind: Kind
    min_args: int
    max_args: int


def _specs() -> dict[str, OpSpec]:
    out: dict[str, OpSpec] = {}
    for name in ("Add", "Sub", "Mul", "Div", "Gt", "Ge", "Lt", "Le", "Eq", "Ne", "And", "Or",
                 "Greater", "Less", "Power"):  # fmt: skip
        out[name] = OpSpec(name, "elementwise", 2, 2)
    for name in ("Neg", "Abs", "Log", "Sign", "Not"):
        out[name] = OpSpec(name, "elementwise", 1, 1)
    out["If"] = OpSpec("If", "elementwise", 3, 3)
    for name in ("Mean", "Sum", "Std", "Var", "Skew", "Kurt", "Max", "Min", "Med", "Mad",
                 "Rank", "IdxMax", "IdxMin", "Slope", "Rsquare", "Resi", "Delta", "EMA",
                 "WMA", "Count"):  # fmt: skip
        out[name] = OpSpec(name, "rolling", 2, 2)
    out["Quantile"] = OpSpec("Quantile", "rolling", 3, 3)
    out["Ref"] = OpSpec("Ref", "ref", 2, 2)
    for name in ("Corr", "Cov"):
        out[name] = OpSpec(name, "pair", 3, 3)
    for name in ("CSRank", "CSZScore", "CSDemean"):
        out[name] = OpSpec(name, "cross", 1, 1)
    out["CSNeutralize"] = OpSpec("CSNeutralize", "cross", 2, 2)
    # Mask(x, "CODE"): x of another instrument, so it needs every instrument at once too.
    out["Mask"] = OpSpec("Mask", "cross", 2, 2)
    return out


OPERATORS = _specs()
