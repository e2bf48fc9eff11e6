"""A data health check in the spirit of Qlib's: missing values, jumps, missing factors."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from quarry.data._read import adjustment_factors, apply_adjustment, read_bars
from quarry.data._store import Store

__all__ = ["HealthCheck", "HealthReport", "check_health"]

_EXAMPLES = 5


@dataclass(frozen=True)
class HealthCheck:
    """One check: how many rows failed it, and a few of them."""

    name: str
    description: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class HealthReport:
    """The health of a store's bars known at ``as_of``."""

    rows: int
    instruments: int
    checks: list[HealthCheck]

    @property
    def ok(self) -> bool:
        return all(c.count == 0 for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows": self.rows,
            "instruments": self.instruments,
            "checks": [
                {
                    "name": c.name,
                    "description": c.description,
                    "count": c.count,
                    "examples": [
                        {k: (str(v) if k == "date" else v) for k, v in e.items()}
                        for e in c.examples
                    ],
                }
                for c in self.checks
            ],
        }


def _check(name: str, description: str, df: pl.DataFrame, mask: pl.Expr, value: str) -> HealthCheck:
    bad = df.filter(mask)
    examples = bad.head(_EXAMPLES).select("instrument", "date", pl.col(value).alias("value"))
    return HealthCheck(name, description, bad.height, examples.to_dicts())


def check_health(
    store: Store,
    *,
    as_of: datetime | str | None = None,
    price_jump: float = 0.5,
    volume_jump: float = 3.0,
) -> HealthReport:
    """Check the bars known at ``as_of``.

    Jumps are measured on adjusted prices and volumes, so a split is not a jump; a price jump
    is ``|p_t / p_{t-1} - 1| > price_jump`` and a volume jump ``|v_t / v_{t-1} - 1| >
    volume_jump`` (Qlib's defaults: 0.5 and 3). A missing factor is a row with no vendor factor
    of an instrument without known corporate actions. Intraday bars are compared bar to bar;
    their volumes are not (a minute's volume often is ten times the last one's).
    """
    store.require()
    intraday = store.spec("bars").intraday
    step = "from one bar to the next" if intraday else "in a day"
    fields = ["open", "high", "low", "close", "volume"]
    raw = read_bars(store, [*fields, "factor"], as_of=as_of)
    factors = adjustment_factors(store, as_of)
    with_actions = factors["instrument"].unique().implode()
    checks = [
        _check(
            f"missing_{f}",
            f"{f} is empty or NaN",
            raw,
            pl.col(f).is_null() | pl.col(f).is_nan(),
            f,
        )
        for f in fields
    ]
    checks.append(
        _check(
            "missing_factor",
            "no factor (vendor or from actions)",
            raw,
            pl.col("factor").is_null() & ~pl.col("instrument").is_in(with_actions),
            "factor",
        )
    )
    adj = apply_adjustment(raw, factors)
    for f in ("open", "high", "low", "close"):
        change = (pl.col(f) / pl.col(f).shift(1).over("instrument") - 1).abs()
        checks.append(
            _check(
                f"{f}_jump",
                f"adjusted {f} moved >{price_jump:.0%} {step}",
                adj.with_columns(change.alias("_chg")),
                pl.col("_chg") > price_jump,
                "_chg",
            )
        )
    if intraday:
        return HealthReport(raw.height, raw["instrument"].n_unique(), checks)
    vchange = (pl.col("volume") / pl.col("volume").shift(1).over("instrument") - 1).abs()
    checks.append(
        _check(
            "volume_jump",
            f"adjusted volume changed >{volume_jump:.0%} in a day",
            adj.with_columns(vchange.alias("_chg")),
            pl.col("_chg").is_finite() & (pl.col("_chg") > volume_jump),
            "_chg",
        )
    )
    return HealthReport(raw.height, raw["instrument"].n_unique(), checks)
