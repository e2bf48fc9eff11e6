"""The workflow file: one YAML document describing a research run, checked with pydantic.

Sections: ``data`` (store, universe, dates, as_of), ``features`` (a set, extra expressions,
processors), ``label``, ``model`` (type, parameters, seed), ``segments`` or ``walk_forward``,
``backtest`` (strategy, costs, limits, optimizer), ``tracking`` (experiment, registered
model), ``gate`` (the rules a challenger must beat the champion by), ``search`` (a
hyperparameter search before training) and ``execution`` (where the steps' independent
pieces run: locally or as Ray tasks; it changes no result, so no step's cache key has it).

The file is read by ``quarry._yaml.load_yaml`` (YAML 1.2's core schema: ``yes`` is text, a
key given twice is an error) and checked whole before any step runs: every section is strict
(an unknown key is an error that names the key, where it is, and the file; ``seed: yes`` or
``topk: '5'`` is not a number), and every setting a later step would refuse is refused here,
by the same code that step runs: the backtest engine's and the optimizer's own settings
(``BacktestConfig``, ``OptimizerConfig``, TopK-Dropout's ``topk``/``n_drop``), the feature
compiler's check of each expression and of the label, the processors' constructors, the
model's constructor (its parameter names), and the segments' and walk-forward schedule's
order. ``load_workflow`` reports every problem at once, one line each, with its path and
line.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import io
import os
import re
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from quarry._dates import to_date
from quarry._yaml import StrictModel, load_yaml
from quarry.backtest import BacktestConfig
from quarry.exceptions import QuarryError, UsageError, WorkflowError
from quarry.portfolio import OptimizerConfig

__all__ = [
    "CONFIG_FIELDS",
    "BacktestSpec",
    "DataSpec",
    "ExecutionSpec",
    "FeaturesSpec",
    "GateRule",
    "GateSpec",
    "ModelSpec",
    "SearchSpec",
    "TrackingSpec",
    "WalkForwardSpec",
    "Workflow",
    "WorkflowError",
    "WorkflowSource",
    "load_workflow",
]

GATE_METRICS = ("rank_ic", "ic", "rank_icir", "icir", "sharpe", "information_ratio",
                "excess_annualized_return", "annualized_return")  # fmt: skip

# -- refusing with the engine's own words ------------------------------------------------------

_ENGINE = "engine"  # the error type of a setting refused by the code that would run it


def _engine_error(exc: Exception, *subjects: str) -> PydanticCustomError:
    """A later step's refusal as a pydantic error. Its message's first line is kept; when it
    starts with the setting's own name (``topk``, ``--open-cost``, ``feature 'X'``), the
    report puts the setting's path there instead."""
    text = str(exc).split("\n")[0]
    for subject in subjects:
        for sep in (" ", ": "):
            if text.startswith(subject + sep):
                rest = text[len(subject) + len(sep) :]
                return PydanticCustomError(_ENGINE, "{text}", {"text": rest, "sep": sep})
    return PydanticCustomError(_ENGINE, "{text}", {"text": text, "sep": ": "})


def _said(text: str) -> PydanticCustomError:
    """A problem in the spec's own words (a rule no later step states)."""
    return PydanticCustomError(_ENGINE, "{text}", {"text": text, "sep": ": "})


def _refuse(problems: Sequence[tuple[tuple[str | int, ...], Any, Any]]) -> NoReturn:
    """Raise several problems at once, each at its place under the field being checked."""
    details: list[InitErrorDetails] = [
        {"type": error, "loc": loc, "input": value} for loc, error, value in problems
    ]
    raise ValidationError.from_exception_data("Workflow", details)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _day(value: object) -> object:
    """A date from the file: YAML 1.2 has no dates, so it is ISO text (or a date, from code)."""
    found = to_date(value)
    if found is None:
        raise _said(f"{value!r} is not a date; write YYYY-MM-DD")
    return found


Day = Annotated[date, BeforeValidator(_day)]


class DataSpec(StrictModel):
    """Which store the run reads, and which of its rows."""

    store: str | None = Field(
        default=None,
        description="The store: a directory, `s3://bucket/prefix`, or a data service's "
        "dataset, `quarry+http://HOST:PORT/NAME` (read through the service with "
        "`$QUARRY_DATA_TOKEN` or `$QUARRY_TOKEN`); default `$QUARRY_HOME/store`. A relative "
        "path is read from the workflow file's folder (`load_workflow` resolves it there), "
        "not from the folder the run starts in; `quarry run --store PATH` runs the file on "
        "another store.",
    )
    universe: str | None = Field(
        default=None,
        description="Rows only where the instrument is a member of this universe (`all`, or "
        "one ingested by name); default every instrument of the store.",
    )
    start: Day | None = Field(
        default=None,
        description="First date of features written (YYYY-MM-DD); windows still read the "
        "history before it.",
    )
    end: Day | None = Field(
        default=None, description="Last date of features written (YYYY-MM-DD), not before start."
    )
    as_of: str | None = Field(
        default=None,
        description="Read what the store knew at this time (a date or an ISO time); default now.",
    )

    @field_validator("as_of")
    @classmethod
    def _as_of(cls, value: str | None) -> str | None:
        from quarry.data._store import to_utc

        try:
            to_utc(value)
        except UsageError as exc:
            raise _engine_error(exc) from None
        return value

    @field_validator("end")
    @classmethod
    def _in_order(cls, value: date | None, info: ValidationInfo) -> date | None:
        start = info.data.get("start")
        if value is not None and start is not None and value < start:
            raise _said(f"{value} is before start {start}; swap them")
        return value


@functools.cache
def _set_names(name: str) -> frozenset[str]:
    from quarry.features import FEATURE_SETS

    return frozenset(FEATURE_SETS[name]()) if name != "none" else frozenset()


class FeaturesSpec(StrictModel):
    """The features the model learns from and how they are prepared."""

    set: Literal["alpha158", "alpha360", "none"] = Field(
        default="alpha158",
        description="A feature set with Qlib's names, or `none` for only the `extra` features.",
    )
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="More features, `NAME: EXPRESSION` in Qlib's notation (e.g. `MA5: "
        "Mean($close, 5)`); a name may not be one of the set's.",
    )
    processors: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Processors in order, each a mapping with its `name` and parameters (e.g. "
        "`{name: CSZScoreNorm}`), fitted on the training rows and applied to every segment.",
    )
    memory: str | None = Field(
        default=None,
        description="Memory to compute features within, e.g. `8GB` (default "
        "`$QUARRY_FEATURES_MEMORY` or 4GB); a larger universe is computed in more chunks.",
    )

    @field_validator("extra")
    @classmethod
    def _expressions(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """Each expression as the feature compiler checks it (names, parsing, size, look-ahead,
        windows), and no name the set already has."""
        from quarry.features import Plan

        taken = _set_names(info.data["set"]) if "set" in info.data else frozenset()
        problems = []
        for name, text in value.items():
            if name in taken:
                why = (
                    f"{name!r} is a feature of {info.data['set']} already; rename it, or set: none"
                )
                problems.append(((name,), _said(why), text))
                continue
            try:
                Plan.build({name: text})
            except QuarryError as exc:
                problems.append(((name,), _engine_error(exc, f"feature {name!r}"), text))
        if problems:
            _refuse(problems)
        return value

    @field_validator("processors")
    @classmethod
    def _processors(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from quarry.features import Processor

        problems = []
        for i, step in enumerate(value):
            try:
                Processor.from_dict(step)
            except (QuarryError, ValueError, TypeError) as exc:
                problems.append(((i,), _engine_error(exc), step))
        if problems:
            _refuse(problems)
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        from quarry.features._outofcore import parse_size

        try:
            if value is not None:
                parse_size(value)
        except UsageError as exc:
            raise _engine_error(exc) from None
        return value


class ModelSpec(StrictModel):
    """The model trained on the features."""

    type: Literal["lightgbm", "linear", "mlp"] = Field(
        default="lightgbm",
        description="LightGBM, a linear model (ridge or lasso), or the PyTorch MLP "
        "(`pip install quarry[mlp]`).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The model's parameters, checked by the model itself (for LightGBM its own "
        "names and aliases); unset ones keep the model's defaults.",
    )
    seed: int = Field(default=0, description="The random seed of the fit.")
    columns: list[str] | None = Field(
        default=None,
        description="The features it learns from, by name; default all of them.",
    )

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """The parameters as the model checks them when it is made (names, types, ranges)."""
        from quarry.models import validate_params

        if "type" in info.data:
            try:
                validate_params(info.data["type"], value)
            except (QuarryError, ValueError, TypeError) as exc:
                raise _engine_error(exc, f"{info.data['type']} parameters") from None
        return value


class WalkForwardSpec(StrictModel):
    """Retrain every ``step`` trading days across ``start``..``end``."""

    start: Day = Field(description="First date of the whole test period (YYYY-MM-DD).")
    end: Day = Field(description="Last date of the whole test period (YYYY-MM-DD).")
    step: int = Field(
        gt=0, description="Trading days between retrains, the length of each test window."
    )
    train_days: int | None = Field(
        default=None,
        gt=0,
        description="Trading days of each fitting window (validation included); default an "
        "expanding window from the first date.",
    )
    valid_days: int = Field(
        default=60,
        gt=0,
        description="Trading days for early stopping, taken from the end of the fitting window.",
    )


# The engine settings the backtest section shares with BacktestConfig (same names and
# defaults; a test keeps them equal). The rest of the section is the strategy's.
CONFIG_FIELDS = ("account", "open_cost", "close_cost", "min_cost", "limit_threshold",
                 "lot_size", "delist_return", "slippage", "impact")  # fmt: skip


class BacktestSpec(StrictModel):
    """The strategy that trades the test-period scores, and the simulated market's costs."""

    strategy: Literal["topk-dropout", "long-short", "score-weighted", "optimizer"] = Field(
        default="topk-dropout",
        description="How scores become a book: Qlib's TopK-Dropout, long-short, weights by "
        "score, or the optimizer (settings under `optimizer`).",
    )
    topk: int = Field(default=50, description="TopK-Dropout: names held, at least 1.")
    n_drop: int = Field(default=5, description="TopK-Dropout: names swapped each day, 0 to `topk`.")
    hold_thresh: int = Field(
        default=1, ge=1, description="Trading days a name is held at least before it is sold."
    )
    deal_price: Literal["open", "close", "vwap"] = Field(
        default="close", description="The price orders fill at."
    )
    open_cost: float = Field(default=0.0005, description="Fee on buys, a share of the value.")
    close_cost: float = Field(default=0.0015, description="Fee on sells, a share of the value.")
    min_cost: float = Field(default=5.0, description="Smallest fee of an order, in cash.")
    limit_threshold: float | None = Field(
        default=0.095,
        description="Daily move that blocks trading at the limit (0.095: 9.5%); null for a "
        "market without price limits.",
    )
    slippage: float = Field(default=0.0, description="Slippage, a share of the traded value.")
    impact: float = Field(
        default=0.0,
        description="Market impact, a share of the traded value per unit of participation "
        "(shares traded / volume).",
    )
    lot_size: int = Field(default=1, description="Shares are bought in multiples of this.")
    delist_return: float = Field(
        default=0.0,
        description="Return of a holding at delisting, from its last close (-1: all lost).",
    )
    account: float = Field(default=1e8, description="Starting cash.")
    benchmark: str | None = Field(
        default=None,
        description="An instrument of the store whose close is an index level; default the "
        "equal-weighted universe.",
    )
    # the optimizer's own settings, checked by it (rebalance_every defaults to 1 day)
    optimizer: OptimizerConfig | None = Field(
        default=None,
        description="The optimizer's settings, only with `strategy: optimizer`; default its "
        "defaults.",
    )

    @field_validator("topk")
    @classmethod
    def _topk(cls, value: int) -> int:
        from quarry.portfolio import check_topk_params

        try:
            check_topk_params(value, 0)
        except UsageError as exc:
            raise _engine_error(exc, "topk") from None
        return value

    @field_validator("n_drop")
    @classmethod
    def _n_drop(cls, value: int, info: ValidationInfo) -> int:
        from quarry.portfolio import check_topk_params

        try:  # against topk when topk itself is valid
            check_topk_params(info.data.get("topk", max(value, 1)), value)
        except UsageError as exc:
            raise _engine_error(exc, "n_drop") from None
        return value

    @field_validator(*CONFIG_FIELDS)
    @classmethod
    def _engine_setting(cls, value: Any, info: ValidationInfo) -> Any:
        """Each setting as ``BacktestConfig`` checks it (alone: one problem per setting)."""
        name = info.field_name
        assert name is not None
        try:
            BacktestConfig(**{name: value})
        except UsageError as exc:
            raise _engine_error(exc, _flag(name), name.replace("_", " "), name) from None
        return value

    @field_validator("optimizer", mode="before")
    @classmethod
    def _optimizer(cls, value: Any, info: ValidationInfo) -> Any:
        """Only with the optimizer strategy; each setting as ``OptimizerConfig`` checks it."""
        if value is None:
            return value
        if info.data.get("strategy", "optimizer") != "optimizer":
            raise _said(
                "only the optimizer strategy reads it; remove it, or set strategy: optimizer"
            )
        if isinstance(value, OptimizerConfig):
            return value
        if not isinstance(value, Mapping):
            raise _said("give the optimizer's settings as a mapping")
        from quarry.portfolio._config import _flag as optimizer_flag

        known = {f.name: f for f in dataclasses.fields(OptimizerConfig)}
        problems: list[tuple[tuple[str | int, ...], Any, Any]] = []
        for key, setting in value.items():
            if key not in known:
                problems.append(((key,), "extra_forbidden", setting))
            elif known[key].type in ("bool", bool) and not isinstance(setting, bool):
                why = f"should be true or false, got {setting!r}"
                problems.append(((key,), _said(why), setting))
            else:
                try:
                    OptimizerConfig(**{key: setting})
                except UsageError as exc:
                    problems.append(((key,), _engine_error(exc, optimizer_flag(key)), setting))
        if problems:
            _refuse(problems)
        return OptimizerConfig(**value)


_PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")  # a job's project, alike


class TrackingSpec(StrictModel):
    """Where the run is recorded in MLflow, and the registered model it becomes a version of,
    with the metadata the version is registered with (docs/reference/model-metadata.md)."""

    experiment: str = Field(default="quarry", description="The MLflow experiment of the run.")
    # ``register:`` in the file: the registered model's name; None: no registry, no gate.
    # (A field named register would shadow pydantic's metaclass method.)
    registered: str | None = Field(
        default=None,
        alias="register",
        description="The registered model the trained model becomes a version of; default "
        "none: nothing registered, and no gate.",
    )
    # checked even when absent (validate_default): a model is not registered without it
    description: str | None = Field(
        default=None,
        validate_default=True,
        description="What the registered model is and what it is for, in a sentence or two; "
        "required with `register` (a version is registered only with its metadata).",
    )
    authors: list[str] | None = Field(
        default=None,
        description="Who made the model, for its metadata; default the OS user who runs the "
        "workflow.",
    )
    licence: str = Field(
        default="proprietary",
        description="The terms the model may be used under, for its metadata (e.g. "
        "`proprietary`, `Apache-2.0`, `CC-BY-4.0`).",
    )
    project: str = Field(
        default="default",
        description="The project the registered model belongs to: letters, digits, `-`, `_` "
        "and `.`, starting with a letter or digit, at most 100 characters; every version of "
        "a model is in the same project.",
    )

    @field_validator("description")
    @classmethod
    def _described(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("registered") is not None:
            raise _said(
                "required to register the model (tracking.register): a sentence on what it is "
                "and what it is for, kept in its metadata with tracking.authors, "
                "tracking.licence and tracking.project"
            )
        if value is not None and not value.strip():
            raise _said("write what the model is for, or remove the key")
        return value

    @field_validator("authors")
    @classmethod
    def _authors(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not name.strip() for name in value)):
            raise _said("give one name or more, e.g. [ana, ben], or remove the key")
        return value

    @field_validator("licence")
    @classmethod
    def _licence(cls, value: str) -> str:
        if not value.strip():
            raise _said("name the terms (e.g. proprietary), or remove the key")
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not _PROJECT.fullmatch(value):
            raise _said(
                f"{value!r} is not a project name: use letters, digits, '-', '_' and '.', "
                "starting with a letter or digit, at most 100 characters"
            )
        return value


class GateRule(StrictModel):
    """The challenger's ``metric`` must beat the champion's by more than ``margin``."""

    # quarry.models.SEARCH_METRICS, the figures worth maximizing (a test keeps them equal)
    metric: Literal[
        "rank_ic", "ic", "rank_icir", "icir", "sharpe", "information_ratio",
        "excess_annualized_return", "annualized_return",
    ] = Field(description="The figure compared (signal analysis and backtest).")  # fmt: skip
    margin: float = Field(default=0.0, description="How much more the challenger needs.")


class GateSpec(StrictModel):
    """When the new model replaces the registry's champion: only if it wins every rule."""

    rules: list[GateRule] = Field(
        default_factory=lambda: [GateRule(metric="rank_ic"), GateRule(metric="sharpe")],
        description="The rules, measured on both models over the latest test window.",
    )
    alias: str = Field(
        default="champion", description="The registry alias moved to the model that wins."
    )


class SearchSpec(StrictModel):
    """A hyperparameter search (Optuna) before training: trials fitted on the train segment
    and scored on the valid one; the model is then trained with the best parameters."""

    trials: int = Field(default=20, gt=0, description="How many parameter sets are tried.")
    # quarry.models.SEARCH_METRICS, the figures worth maximizing (a test keeps them equal)
    metric: Literal[
        "rank_ic", "ic", "rank_icir", "icir", "rank_ic_t", "ic_t", "long_short_mean"
    ] = Field(default="rank_ic", description="The validation figure the search maximizes.")
    space: dict[str, list[Any]] | None = Field(
        default=None,
        description="The parameters searched, `NAME: [float, LOW, HIGH]` (`[float, LOW, HIGH, "
        "log]` on a log scale), `[int, LOW, HIGH]` or `[choice, [A, B, ...]]`; default "
        "LightGBM's learning rate, leaves, depth, penalties and sampling (ridge or lasso for "
        "the linear model; the MLP has none). The model's `params` are fixed in every trial; "
        "a parameter is either searched or fixed.",
    )
    jobs: int = Field(
        default=1,
        gt=0,
        description="Trials asked for at once and evaluated together: in parallel as Ray "
        "tasks with `execution.executor: ray`, one after another locally. The parameters "
        "found depend on it (and the seed), not on the executor.",
    )


class ExecutionSpec(StrictModel):
    """Where the steps' independent pieces (feature chunks, walk-forward windows, search
    trials) run. The results are the same either way, so no step's cache key has it."""

    executor: Literal["local", "ray"] = Field(
        default="local",
        description="`local`: one piece after another in this process; `ray`: Ray tasks on a "
        "cluster (`pip install quarry[ray]`). `quarry run --executor` overrides it.",
    )
    ray_address: str | None = Field(
        default=None,
        description="The Ray cluster, with `executor: ray`: `auto` (the one this machine "
        "joined with `ray start`), `HOST:PORT` or `ray://HOST:10001`; default "
        "`$RAY_ADDRESS`, else a Ray started for the run. `quarry run --ray-address` "
        "overrides it. Feature chunks and windows travel through Ray's object store; "
        "nothing a task needs is read from this machine's disk.",
    )

    @field_validator("ray_address")
    @classmethod
    def _with_ray(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("executor") == "local":
            raise _said("only the ray executor reads it; remove it, or set executor: ray")
        if value is not None and not value.strip():
            raise _said("give an address (auto, HOST:PORT or ray://HOST:10001), or remove it")
        return value


@dataclasses.dataclass(frozen=True)
class WorkflowSource:
    """The file a workflow was read from (absolute) and the SHA-256 of the bytes read: what
    a registered model's metadata names as the workflow that made it."""

    path: str
    sha256: str


class Workflow(StrictModel):
    """One research run: data, features, label, model, schedule, backtest, tracking, gate."""

    # set by load_workflow; None for a workflow made in code
    _source: WorkflowSource | None = PrivateAttr(default=None)

    name: str = Field(default="workflow", description="The workflow's name, in its records.")
    data: DataSpec = Field(default_factory=DataSpec, description="The data read.")
    features: FeaturesSpec = Field(default_factory=FeaturesSpec, description="The features.")
    label: str = Field(
        default="Ref($close, -2)/Ref($close, -1) - 1",
        description="What the model predicts, an expression that may look ahead; its horizon "
        "is the purge gap between segments.",
    )
    model: ModelSpec = Field(default_factory=ModelSpec, description="The model.")
    segments: dict[str, str] | None = Field(
        default=None,
        description="`train`, `valid` and `test`, each `START:END` (YYYY-MM-DD:YYYY-MM-DD), in "
        "order and a label's horizon apart; give either this or `walk_forward`.",
    )
    walk_forward: WalkForwardSpec | None = Field(
        default=None, description="A walk-forward schedule instead of `segments`."
    )
    backtest: BacktestSpec = Field(default_factory=BacktestSpec, description="The backtest.")
    tracking: TrackingSpec = Field(
        default_factory=TrackingSpec, description="MLflow and the model registry."
    )
    gate: GateSpec = Field(default_factory=GateSpec, description="The promotion gate.")
    search: SearchSpec | None = Field(
        default=None,
        description="A hyperparameter search before training; default none (the model's "
        "`params` as given). With `walk_forward`, it searches on the first window's train "
        "and valid days, which precede every test day.",
    )
    execution: ExecutionSpec = Field(
        default_factory=ExecutionSpec,
        description="Where the steps' pieces run: locally or as Ray tasks.",
    )

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        from quarry.features import Plan

        try:
            Plan.build({}, label=value)
        except QuarryError as exc:
            raise _engine_error(exc, "label") from None
        return value

    @field_validator("model")
    @classmethod
    def _columns(cls, value: ModelSpec, info: ValidationInfo) -> ModelSpec:
        features = info.data.get("features")
        if value.columns is None or features is None:
            return value
        have = _set_names(features.set) | set(features.extra)
        missing = [c for c in value.columns if c not in have]
        if missing:
            close = difflib.get_close_matches(missing[0], sorted(have), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            why = f"no feature {missing[0]!r}{hint}; the features are features.set's and extra's"
            _refuse([(("columns",), _said(why), value.columns)])
        return value

    @field_validator("segments")
    @classmethod
    def _segments(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        from quarry.models import Segments

        try:
            if value is not None:
                Segments.parse(value)
        except UsageError as exc:
            raise _engine_error(exc, "segments") from None
        return value

    @field_validator("walk_forward")
    @classmethod
    def _schedule(cls, value: WalkForwardSpec | None, info: ValidationInfo) -> Any:
        """The schedule as training builds it, with the label's purge gap."""
        from quarry.models import WalkForward, label_horizon

        if value is None:
            return value
        horizon = label_horizon(info.data["label"]) if "label" in info.data else 0
        try:
            WalkForward(start=value.start, end=value.end, step=value.step, horizon=horizon,
                        train_days=value.train_days, valid_days=value.valid_days)  # fmt: skip
        except UsageError as exc:
            raise _engine_error(exc) from None
        return value

    @field_validator("search")
    @classmethod
    def _space(cls, value: SearchSpec | None, info: ValidationInfo) -> SearchSpec | None:
        """The space as the search reads it: each key a parameter of the model, not one of
        its fixed ``params``, and both ends of its range values the model takes."""
        from quarry.models import DEFAULT_SPACES, parse_space

        model = info.data.get("model")
        if value is None or model is None:
            return value
        if value.space is None:
            if model.type not in DEFAULT_SPACES:
                default = f"model {model.type} has no default search space; give one"
                _refuse([(("space",), _said(default), None)])
            return value
        if not value.space:
            _refuse([(("space",), _said("give at least one parameter, or remove it"), {})])
        problems: list[tuple[tuple[str | int, ...], Any, Any]] = []
        for name, spec in value.space.items():
            try:
                parse_space({name: spec}, model=model.type, fixed=model.params)
            except UsageError as exc:
                why = _engine_error(exc, f"search space key {name!r}", "search space")
                problems.append((("space", name), why, spec))
        if problems:
            _refuse(problems)
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> Workflow:
        if (self.segments is None) == (self.walk_forward is None):
            raise ValueError("give either segments (train, valid, test) or walk_forward")
        return self

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain JSON-able data, for cache keys and records."""
        return self.model_dump(mode="json")[name]  # type: ignore[no-any-return]

    @property
    def source(self) -> WorkflowSource | None:
        """The file this workflow was read from and its digest (None: made in code)."""
        return self._source


# -- reading the file --------------------------------------------------------------------------


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


def _shown(value: object) -> str:
    text = repr(value)
    return f", got {text}" if not isinstance(value, dict | list) and len(text) <= 60 else ""


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _problem(error: Any) -> str:
    """One pydantic error as a line: where, what, and what to write instead."""
    loc = tuple(error["loc"])
    path, kind, value = _where(loc), error["type"], error.get("input")
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        key, known = str(loc[-1]), _known(loc)
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        place = f"in {_where(loc[:-1])}" if loc[:-1] else "at the top level"
        return f"unknown key {key!r} {place}{hint}; valid keys there: {', '.join(known)}"
    if kind == _ENGINE:
        return f"{path}{error['ctx']['sep']}{error['msg']}"
    if kind == "missing":
        return f"{path} is required"
    msg = str(error["msg"])
    if kind in ("value_error", "assertion_error"):
        msg = msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        return f"{path}: {msg}" if loc else msg
    msg = msg.removeprefix("Input ")
    text = f"{path}: {msg[:1].lower()}{msg[1:]}{_shown(value)}"
    if kind == "bool_type":
        text += "; write true or false"
    elif kind in ("int_type", "float_type") and isinstance(value, str) and _number(value):
        text += "; write the number without quotes"
    if kind == "literal_error" and isinstance(value, str):
        expected = str(error["ctx"]["expected"]).replace(" or ", ",")
        choices = [c.strip(" '") for c in expected.split(",")]
        close = difflib.get_close_matches(value, choices, n=1)
        text += f" (did you mean {close[0]!r}?)" if close else ""
    return text


def load_workflow(path: Path) -> Workflow:
    """Read and check a workflow file, all of it, before anything runs. A relative
    ``data.store`` is read from the file's folder.

    Raises
    ------
    UsageError
        A ``YamlError`` (the file's line and column) when it is not YAML this reads, or a
        ``WorkflowError`` listing every problem, one line each, naming its place and line,
        e.g. ``w.yaml: backtest.topk must be at least 1, got 0; pass the number of names to
        hold (line 16)``.
    """
    text, sha256 = _read(path)
    document = load_yaml(text, str(path))
    if not isinstance(document.data, dict):
        raise UsageError(
            f"{path}: a workflow is a mapping of sections (data, features, model, ...)"
        )
    try:
        spec = Workflow.model_validate(document.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            line = document.line(tuple(error["loc"]))
            problems.append(_problem(error) + (f" (line {line})" if line else ""))
        raise WorkflowError(str(path), problems) from None
    spec = _paths_from(spec, Path(path).parent)
    spec._source = WorkflowSource(os.path.abspath(path), sha256)
    return spec


def _read(path: Path) -> tuple[str, str]:
    """The file's text, read as ``quarry._yaml.read_file`` reads it (UTF-8, universal
    newlines), and the SHA-256 of the very bytes it came from (one read, so the digest is
    of the text that was checked)."""
    try:
        raw = Path(path).read_bytes()
        text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"{path}: cannot read the workflow ({reason})") from None
    return text, hashlib.sha256(raw).hexdigest()


def _paths_from(spec: Workflow, folder: Path) -> Workflow:
    """A relative local path in the file (``data.store``) is relative to the file's folder,
    wherever the process runs (a job, another shell): the file means the same everywhere."""
    store = spec.data.store
    if store is None or "://" in store or Path(store).expanduser().is_absolute():
        return spec
    # lexically, not through symlinks: a linked folder of workflows reads the store beside
    # the link, as the path says
    where = os.path.abspath(folder / Path(store).expanduser())
    return spec.model_copy(update={"data": spec.data.model_copy(update={"store": where})})
