"""A backtest's trading settings: cash, costs, limits, lots. Kept apart from the engine so
that a workflow file can be read and checked without loading the engine's compiled kernels."""

from __future__ import annotations

import math
from dataclasses import dataclass

from quarry.exceptions import UsageError

__all__ = ["BacktestConfig"]


@dataclass(frozen=True)
class BacktestConfig:
    account: float = 1e8
    open_cost: float = 0.0005
    close_cost: float = 0.0015
    min_cost: float = 5.0
    limit_threshold: float | None = 0.095
    lot_size: int = 1
    risk_degree: float = 0.95
    delist_return: float = 0.0
    slippage: float = 0.0  # share of the traded value
    impact: float = 0.0  # share of the traded value per unit of participation (shares/volume)

    def __post_init__(self) -> None:
        for name in ("account", "open_cost", "close_cost", "min_cost", "slippage", "impact",
                     "risk_degree", "delist_return", "limit_threshold"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UsageError(f"--{name.replace('_', '-')} {value}: give a finite number")
        if self.account <= 0:
            raise UsageError(f"--account {self.account}: give a positive starting cash")
        for name in ("open_cost", "close_cost", "min_cost", "slippage", "impact"):
            if getattr(self, name) < 0:
                raise UsageError(f"--{name.replace('_', '-')} cannot be negative")
        if self.lot_size < 1:
            raise UsageError(f"lot size {self.lot_size}: give 1 or more shares")
        if not 0 < self.risk_degree <= 1:
            raise UsageError(f"risk degree {self.risk_degree}: give a share in (0, 1]")
        if self.limit_threshold is not None and self.limit_threshold <= 0:
            raise UsageError(
                f"--limit-threshold {self.limit_threshold}: give a positive daily move (0.095 "
                "for 9.5%), or none for a market without price limits"
            )
        if self.delist_return < -1:
            raise UsageError(
                f"--delist-return {self.delist_return}: a holding cannot lose more than all of "
                "its value; give -1 or more"
            )
