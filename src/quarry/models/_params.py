"""Model parameters, checked before anything runs.

``validate_params(model, params)`` refuses an unknown name (suggesting the closest known
one) and a value the model would reject, naming the parameter, the value and what is
allowed. LightGBM's names are LightGBM's own table (every parameter and alias the installed
library knows, from ``LGBM_DumpParamAliases``), and its values are put to LightGBM itself:
a booster is created on a few rows with them, so whatever LightGBM refuses when it parses
its configuration is refused here, before any data is read. Objectives and metrics are
checked against what fits Quarry's training, which learns a per-day z-scored, continuous
label and stops early on a metric of the validation segment.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import math
import os
import re
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from quarry.exceptions import UsageError

__all__ = ["MLP_DEFAULTS", "MODEL_NAMES", "lightgbm_params", "validate_params"]

MODEL_NAMES = ("lightgbm", "linear", "mlp")
# The MLP's parameters and their defaults (its rules are in _MLP below).
MLP_DEFAULTS: dict[str, Any] = {
    "hidden": [256, 64],
    "dropout": 0.1,
    "lr": 1e-3,
    "weight_decay": 1e-5,
    "batch_size": 4096,
    "max_epochs": 50,
    "patience": 5,
}

# LightGBM objectives and metrics that fit a continuous label of any sign, with their aliases
# (LightGBM's documentation of the objective and metric parameters; the library has no
# table of them).
_OBJECTIVES = {
    **dict.fromkeys(
        "regression regression_l2 l2 mean_squared_error mse l2_root root_mean_squared_error "
        "rmse".split(),
        "regression",
    ),
    **dict.fromkeys("regression_l1 l1 mean_absolute_error mae".split(), "regression_l1"),
    "huber": "huber",
    "fair": "fair",
    "quantile": "quantile",
    "mape": "mape",
    "mean_absolute_percentage_error": "mape",
}
_METRICS = {
    **dict.fromkeys("l1 mean_absolute_error mae regression_l1".split(), "l1"),
    **dict.fromkeys("l2 mean_squared_error mse regression_l2 regression".split(), "l2"),
    **dict.fromkeys("rmse root_mean_squared_error l2_root".split(), "rmse"),
    "quantile": "quantile",
    "mape": "mape",
    "mean_absolute_percentage_error": "mape",
    "huber": "huber",
    "fair": "fair",
}
# Objectives and metrics LightGBM has that need another kind of label.
_OTHER_LABELS = {
    **dict.fromkeys("poisson gamma gamma_deviance tweedie".split(), "a positive label"),
    **dict.fromkeys(
        "binary binary_logloss binary_error auc average_precision cross_entropy xentropy "
        "cross_entropy_lambda xentlambda kullback_leibler kldiv".split(),
        "a label of 0 and 1 (or a probability)",
    ),
    **dict.fromkeys(
        "multiclass softmax multiclassova multiclass_ova ova ovr multi_logloss multi_error "
        "auc_mu".split(),
        "a class label",
    ),
    **dict.fromkeys(
        "lambdarank rank_xendcg xendcg xe_ndcg xe_ndcg_mart xendcg_mart ndcg map "
        "mean_average_precision".split(),
        "ranking groups",
    ),
    **dict.fromkeys(
        "custom none null na".split(), "a custom objective function, which training has not"
    ),
}
# Parameters Quarry's training sets itself (fit): giving them would be ignored.
_FIXED = {
    "seed": "set the seed with --seed (or the workflow's model seed), not as a parameter",
    "deterministic": "training is always deterministic",
    "force_row_wise": "training always builds histograms row-wise",
    "force_col_wise": "training always builds histograms row-wise (force_row_wise)",
    "verbosity": "training keeps LightGBM quiet",
}
# Parameters whose values depend on the data (its feature count, files it names), left out
# of the trial booster and checked by LightGBM when it trains.
_DATA_SHAPED = frozenset(
    "auc_mu_weights categorical_feature cegb_penalty_feature_coupled cegb_penalty_feature_lazy "
    "config convert_model convert_model_language data eval_at feature_contri "
    "forcedbins_filename forcedsplits_filename group_column header ignore_column input_model "
    "interaction_constraints label_column label_gain machine_list_filename machines "
    "max_bin_by_feature monotone_constraints output_model output_result parser_config_file "
    "task valid weight_column".split()
)
# Quarry's training loop reads these two (LightGBM's num_iterations and early_stopping_round,
# under any of their aliases).
_ROUNDS, _PATIENCE = "num_iterations", "early_stopping_round"

_LINEAR = {"kind": "ridge or lasso", "alphas": "a list of positive penalties to pick from"}


def validate_params(model: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``params`` for ``model`` (lightgbm, linear or mlp) and return them as a dict.

    Raises UsageError naming the parameter, its value and what is allowed; for an unknown
    name, the closest known one. Call it when a parameter file or workflow is loaded, before
    any step runs; the models call it too when they are made.

    Examples
    --------
    >>> validate_params("lightgbm", {"learning_rate": 0.05, "num_leaves": 31})
    {'learning_rate': 0.05, 'num_leaves': 31}
    >>> validate_params("lightgbm", {"learning_rate": -1})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    quarry.exceptions.UsageError: lightgbm parameter learning_rate: -1 is refused ... > 0.0
    """
    if model not in MODEL_NAMES:
        close = difflib.get_close_matches(str(model), MODEL_NAMES, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise UsageError(f"unknown model {model!r}{hint} (models: {', '.join(MODEL_NAMES)})")
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise UsageError(
            f"{model} parameters: give a mapping of name: value, not {type(params).__name__}"
        )
    params = dict(params)
    if model == "lightgbm":
        lightgbm_params(params)
    elif model == "linear":
        _check_linear(params)
    else:
        _check_mlp(params)
    return params


# -- LightGBM ---------------------------------------------------------------------------------


@functools.cache
def _lightgbm_names() -> dict[str, str]:
    """Every parameter name and alias the installed LightGBM knows -> its main name."""
    from lightgbm.basic import _ConfigAliases

    _ConfigAliases.get("objective")  # loads the library's table (LGBM_DumpParamAliases)
    table: dict[str, list[str]] = _ConfigAliases.aliases or {}
    return {alias: main for main, aliases in table.items() for alias in [main, *aliases]}


def lightgbm_params(
    params: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], int | None, int | None]:
    """Validated LightGBM parameters over ``defaults``: (LightGBM's parameters, boosting
    rounds, early-stopping patience), the last two None unless given.

    A parameter given under any alias replaces the default of the same parameter (given
    under another alias, LightGBM would keep one of the two silently); a thread count is
    passed as ``num_threads``.
    """
    if params is not None and not isinstance(params, Mapping):
        raise UsageError(
            f"lightgbm parameters: give a mapping of name: value, not {type(params).__name__}"
        )
    names = _lightgbm_names()
    given: dict[str, str] = {}  # main name -> the name given
    rounds = patience = None
    for key, value in (params or {}).items():
        if not isinstance(key, str) or key not in names:
            mains = sorted(set(names.values()))  # a parameter's main name before its aliases
            close = difflib.get_close_matches(str(key), mains, n=1) or (
                difflib.get_close_matches(str(key), list(names), n=1)
            )
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(
                f"unknown lightgbm parameter {key!r}{hint} (LightGBM's parameters: "
                "https://lightgbm.readthedocs.io/en/latest/Parameters.html)"
            )
        main = names[key]
        if main in given:
            raise UsageError(
                f"lightgbm parameters {given[main]} and {key} are the same parameter "
                f"({main}); give it once"
            )
        given[main] = key
        if main in _FIXED:
            raise UsageError(f"lightgbm parameter {key}: {_FIXED[main]}")
        _check_lightgbm_type(key, value)
        if main == _ROUNDS:
            rounds = _whole(key, value, "lightgbm", least=1)
        elif main == _PATIENCE:
            patience = _whole(key, value, "lightgbm", least=1)
        elif main == "objective":
            _check_choice(key, value, _OBJECTIVES, "objective")
        elif main == "metric":
            _check_metrics(key, value)
    user = {k: v for k, v in (params or {}).items() if names[k] not in (_ROUNDS, _PATIENCE)}
    user = {("num_threads" if names[k] == "num_threads" else k): v for k, v in user.items()}
    kept = {k: v for k, v in (defaults or {}).items() if names.get(k, k) not in given}
    merged = {**kept, **user}
    for key in user:  # each alone first, so that LightGBM's complaint names the culprit
        _try_lightgbm({key: user[key]}, names)
    _try_lightgbm(merged, names)
    return merged, rounds, patience


def _check_lightgbm_type(key: str, value: Any) -> None:
    scalar = (str, int, float, bool)
    ok = isinstance(value, scalar) or (
        isinstance(value, list | tuple)
        and all(
            isinstance(v, scalar)
            or (isinstance(v, list | tuple) and all(isinstance(w, scalar) for w in v))
            for v in value
        )
    )
    if not ok or value is None:
        raise UsageError(
            f"lightgbm parameter {key}: {value!r} is not a value LightGBM takes; give a "
            "number, a word, true/false or a list of them"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"lightgbm parameter {key}: {value!r} is not a finite number")


def _check_choice(key: str, value: Any, allowed: Mapping[str, str], what: str) -> None:
    if not isinstance(value, str):
        raise UsageError(f"lightgbm parameter {key}: {value!r} is not a {what} name")
    name = value.strip().lower()
    if name in allowed:
        return
    usable = sorted(set(allowed.values()))
    if name in _OTHER_LABELS:
        raise UsageError(
            f"lightgbm parameter {key}: {value!r} needs {_OTHER_LABELS[name]}, but training "
            f"learns a per-day z-scored, continuous label; use one of {', '.join(usable)}"
        )
    close = difflib.get_close_matches(name, list(allowed), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise UsageError(
        f"lightgbm parameter {key}: unknown {what} {value!r}{hint} (use one of {', '.join(usable)})"
    )


def _check_metrics(key: str, value: Any) -> None:
    """Early stopping needs at least one metric, and each must fit a continuous label."""
    names = (
        value.split(",")
        if isinstance(value, str)
        else list(value)
        if isinstance(value, list | tuple)
        else [value]
    )
    names = [n.strip() if isinstance(n, str) else n for n in names]
    if not [n for n in names if n and str(n).lower() not in ("none", "null", "na", "custom")]:
        raise UsageError(
            f"lightgbm parameter {key}: {value!r} names no metric, and early stopping on the "
            f"valid segment needs one; use one of {', '.join(sorted(set(_METRICS.values())))}"
        )
    for n in names:
        _check_choice(key, n, _METRICS, "metric")


def _whole(key: str, value: Any, model: str, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{model} parameter {key}: {value!r} must be a whole number >= {least}")
    return value


_CHECK = re.compile(r"Check failed: \(?(\w+)\)? *(>=|<=|>|<|==|!=) *\(?([^)\s]+)\)?")
_TYPE = re.compile(r"Parameter (\w+) should be (.*)")
_WHERE = re.compile(r" at [^ ]+\.(?:cpp|hpp|h), line \d+ *\.?\s*$")


def _try_lightgbm(params: Mapping[str, Any], names: Mapping[str, str]) -> None:
    """Create a LightGBM booster on a few rows with ``params`` (those that do not depend on
    the data), turning LightGBM's refusal into a UsageError that names the parameter."""
    import lightgbm as lgb
    import numpy as np

    trial = {k: v for k, v in params.items() if names[k] not in _DATA_SHAPED}
    trial |= {"verbosity": -1, "deterministic": True, "force_row_wise": True, "num_threads": 1}
    x = np.arange(8.0).reshape(8, 1)
    y = np.array([0.0, 1.0] * 4)
    try:
        with _quiet_stderr():  # LightGBM prints its fatal errors to stderr as well
            lgb.Booster(trial, lgb.Dataset(x, y, params=trial, free_raw_data=False))
    except lgb.basic.LightGBMError as exc:
        raise UsageError(_explain(str(exc), params, names)) from None


def _explain(message: str, params: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """LightGBM's complaint as a sentence naming the parameter(s) as given."""
    text = _WHERE.sub("", message.strip().splitlines()[0] if message.strip() else message)
    by_main = {names[k]: k for k in params}
    if text.startswith("Unknown token") and len(params) == 1:
        ((key, value),) = params.items()
        return f"lightgbm parameter {key}: {value!r} is refused by LightGBM: it is not a number"
    found = _CHECK.search(text) or _TYPE.search(text)
    if found is not None and found.group(1) in by_main:
        main = found.group(1)
        key = by_main[main]
        alias = f" (LightGBM's {main})" if key != main else ""
        if found.re is _CHECK:
            rule = f"it must be {found.group(2)} {found.group(3)}"
        else:
            rule = f"it should be {found.group(2)}".replace('got "', 'not "')
        return f"lightgbm parameter {key}{alias}: {params[key]!r} is refused by LightGBM: {rule}"
    shown = ", ".join(f"{k}: {v!r}" for k, v in params.items())
    if len(params) == 1:
        return f"lightgbm parameter {shown} is refused by LightGBM: {text}"
    return f"lightgbm parameters {{{shown}}} are refused by LightGBM together: {text}"


_STDERR_SWAP = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 to /dev/null for a moment (LightGBM writes there from C++). One
    swap at a time: two overlapping ones would restore each other's /dev/null."""
    with _STDERR_SWAP:
        yield from _swapped_stderr()


def _swapped_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


# -- linear and MLP ---------------------------------------------------------------------------


def _unknown(model: str, key: Any, known: Mapping[str, str]) -> UsageError:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return UsageError(
        f"unknown {model} parameter {key!r}{hint} (the {model} model takes {', '.join(known)})"
    )


def _check_linear(params: Mapping[str, Any]) -> None:
    for key, value in params.items():
        if key not in _LINEAR:
            raise _unknown("linear", key, _LINEAR)
        if key == "kind" and value not in ("ridge", "lasso"):
            raise UsageError(f"linear parameter kind: {value!r}; choose ridge or lasso")
        if key == "alphas" and not (
            isinstance(value, list | tuple) and value and all(_positive(a) for a in value)
        ):
            raise UsageError(
                f"linear parameter alphas: {value!r}; give a list of positive numbers, "
                "e.g. [0.1, 1, 10]"
            )


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


_MLP: dict[str, tuple[str, Any]] = {
    # name: (what is allowed, check)
    "hidden": (
        "a list of layer widths, whole numbers >= 1, e.g. [256, 64]",
        lambda v: (
            isinstance(v, list | tuple)
            and len(v) > 0
            and all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in v)
        ),
    ),
    "dropout": ("a number from 0 up to (not including) 1", lambda v: _number(v) and 0 <= v < 1),
    "lr": ("a positive number, e.g. 0.001", _positive),
    "weight_decay": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "batch_size": ("a whole number >= 1", lambda v: _whole_ok(v, 1)),
    "max_epochs": ("a whole number >= 1", lambda v: _whole_ok(v, 1)),
    "patience": ("a whole number >= 1", lambda v: _whole_ok(v, 1)),
}


def _whole_ok(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _check_mlp(params: Mapping[str, Any]) -> None:
    allowed = {k: _MLP[k][0] for k in MLP_DEFAULTS}
    for key, value in params.items():
        if key not in allowed:
            raise _unknown("mlp", key, allowed)
        what, ok = _MLP[key]
        if not ok(value):
            raise UsageError(f"mlp parameter {key}: {value!r}; give {what}")
