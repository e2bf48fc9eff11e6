"""The workflow file: one YAML document describing a research run, checked with pydantic.

Sections: ``data`` (store, universe, dates, as_of), ``features`` (a set, extra expressions,
processors), ``label``, ``model`` (type, parameters, seed), ``segments`` or ``walk_forward``,
``backtest`` (strategy, costs, limits, optimizer), ``tracking`` (experiment, registered
model) and ``gate`` (the rules a challenger must beat the champion by). Every section is
strict: an unknown key is an error that names the key, where it is, and the file.
"""

from __future__ import annotations

import dataclasses
import difflib
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from quarry.exceptions import UsageError
from quarry.portfolio import OptimizerConfig

__all__ = [
    "CONFIG_FIELDS",
    "BacktestSpec",
    "DataSpec",
    "FeaturesSpec",
    "GateRule",
    "GateSpec",
    "ModelSpec",
    "TrackingSpec",
    "WalkForwardSpec",
    "Workflow",
    "load_workflow",
]

GATE_METRICS = ("rank_ic", "ic", "rank_icir", "icir", "sharpe", "information_ratio",
                "excess_annualized_return", "annualized_return")  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DataSpec(_Strict):
    store: str | None = None  # default: $QUARRY_HOME/store
    universe: str | None = None
    start: date | None = None
    end: date | None = None
    as_of: str | None = None


class FeaturesSpec(_Strict):
    set: Literal["alpha158", "alpha360", "none"] = "alpha158"
    extra: dict[str, str] = Field(default_factory=dict)  # name: expression
    processors: list[dict[str, Any]] = Field(default_factory=list)
    memory: str | None = None


class ModelSpec(_Strict):
    type: Literal["lightgbm", "linear", "mlp"] = "lightgbm"
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    columns: list[str] | None = None  # the features it learns from; default all of them


class WalkForwardSpec(_Strict):
    """Retrain every ``step`` trading days across ``start``..``end``."""

    start: date
    end: date
    step: int = Field(gt=0)
    train_days: int | None = Field(default=None, gt=0)
    valid_days: int = Field(default=60, gt=0)


# The engine settings the backtest section shares with BacktestConfig (same names and
# defaults; a test keeps them equal). The rest of the section is the strategy's.
CONFIG_FIELDS = ("account", "open_cost", "close_cost", "min_cost", "limit_threshold",
                 "lot_size", "delist_return", "slippage", "impact")  # fmt: skip


class BacktestSpec(_Strict):
    strategy: Literal["topk-dropout", "long-short", "score-weighted", "optimizer"] = "topk-dropout"
    topk: int = 50
    n_drop: int = 5
    hold_thresh: int = 1
    deal_price: Literal["open", "close", "vwap"] = "close"
    open_cost: float = 0.0005
    close_cost: float = 0.0015
    min_cost: float = 5.0
    limit_threshold: float | None = 0.095
    slippage: float = 0.0
    impact: float = 0.0
    lot_size: int = 1
    delist_return: float = 0.0
    account: float = 1e8
    benchmark: str | None = None
    # the optimizer's own settings, checked by it (rebalance_every defaults to 1 day)
    optimizer: OptimizerConfig | None = None


class TrackingSpec(_Strict):
    experiment: str = "quarry"
    # ``register:`` in the file: the registered model's name; None: no registry, no gate.
    # (A field named register would shadow pydantic's metaclass method.)
    registered: str | None = Field(default=None, alias="register")


class GateRule(_Strict):
    """The challenger's ``metric`` must beat the champion's by more than ``margin``."""

    metric: Literal[
        "rank_ic", "ic", "rank_icir", "icir", "sharpe", "information_ratio",
        "excess_annualized_return", "annualized_return",
    ]  # fmt: skip
    margin: float = 0.0


class GateSpec(_Strict):
    rules: list[GateRule] = Field(
        default_factory=lambda: [GateRule(metric="rank_ic"), GateRule(metric="sharpe")]
    )
    alias: str = "champion"


class Workflow(_Strict):
    name: str = "workflow"
    data: DataSpec = Field(default_factory=DataSpec)
    features: FeaturesSpec = Field(default_factory=FeaturesSpec)
    label: str = "Ref($close, -2)/Ref($close, -1) - 1"
    model: ModelSpec = Field(default_factory=ModelSpec)
    segments: dict[str, str] | None = None  # train, valid, test: "START:END"
    walk_forward: WalkForwardSpec | None = None
    backtest: BacktestSpec = Field(default_factory=BacktestSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    gate: GateSpec = Field(default_factory=GateSpec)

    @model_validator(mode="after")
    def _one_schedule(self) -> Workflow:
        if (self.segments is None) == (self.walk_forward is None):
            raise ValueError("give either segments (train, valid, test) or walk_forward")
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain JSON-able data, for cache keys and records."""
        return self.model_dump(mode="json")[name]  # type: ignore[no-any-return]


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _known(loc: tuple[int | str, ...]) -> list[str]:
    """The keys valid where ``loc`` points: the fields of that section."""
    model: Any = Workflow  # a pydantic model, a dataclass (a section checked by its own class)
    for part in loc[:-1]:
        if model is None or not isinstance(part, str) or dataclasses.is_dataclass(model):
            return []
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        model = next(
            (a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)
             and (issubclass(a, BaseModel) or dataclasses.is_dataclass(a))),
            None,
        )  # fmt: skip
    if model is not None and dataclasses.is_dataclass(model):
        return [f.name for f in dataclasses.fields(model)]
    return list(model.model_fields) if model is not None else []


def load_workflow(path: Path) -> Workflow:
    """Read and check a workflow file; a problem is one ``UsageError`` line naming the file,
    the key and what to do."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the workflow ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}:{line} not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise UsageError(
            f"{path}: a workflow is a mapping of sections (data, features, model, ...)"
        )
    try:
        return Workflow.model_validate(raw)
    except UsageError as exc:  # a section checked by its own class (the optimizer's)
        raise UsageError(f"{path}: {exc}") from exc
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            key = str(loc[-1])
            close = difflib.get_close_matches(key, _known(loc), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            where = _where(loc[:-1])
            raise UsageError(
                f"{path}: unknown key {key!r} in {where}{hint}; valid keys there: "
                f"{', '.join(_known(loc))}"
            ) from exc
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise UsageError(f"{path}: {_where(loc)}: {error['msg']}{more}") from exc
