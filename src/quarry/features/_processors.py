"""Feature processors: Qlib's data processors, fitted on a training window, over long frames.

A processor normalizes or cleans the columns of a long frame (``instrument``, ``date``, Float64
feature columns, and label columns, ``LABEL0`` unless told). Each one is an estimator in the
scikit-learn manner: the constructor stores keyword parameters, which cannot be changed
afterwards; ``fit(frame)`` learns what it needs and returns the processor; statistics it learned
end in ``_`` (``center_``, ``scale_``); ``transform(frame)`` returns a new frame. Processors that
learn statistics read only the rows dated inside their fit window (``fit_start`` to ``fit_end``,
both included), so fitting on the whole history does not leak the test period into the training
data. The cross-sectional ones look at one date at a time and learn nothing.

Missing values: NaN and null are both read as missing, and every processed column comes out as
Float64 with nulls for missing values (never NaN), the convention of ``quarry.features.compute``.
Infinities stay, as in Qlib, unless ``ProcessInf`` replaces them.

A processor that transforms each row on its own (``row_wise``: Fillna, the fitted
normalizations, Winsorize by the fit window) can also transform a float64 matrix of rows
(``transform_array``, NaN for missing) with the same arithmetic and so the same values. Serving
scores a few rows at a time that way: a frame's per-column expressions cost a one-row
prediction tens of milliseconds, a matrix microseconds.

Each processor picks its columns with ``fields``: ``"features"`` (every floating-point column
that is neither ``instrument``, ``date`` nor a label; the default), ``"label"`` (the label
columns), or an explicit list of column names.

``to_dict`` and ``Processor.from_dict`` turn the configuration (not the learned statistics) into
plain data and back, so that a workflow file can name the processors::

    processors:
      - {name: ProcessInf}
      - {name: RobustZScoreNorm, fit_start: 2008-01-01, fit_end: 2014-12-31}
      - {name: Fillna}
      - {name: DropnaLabel}
      - {name: CSRankNorm, fields: label}

The semantics follow Qlib's ``qlib/data/dataset/processor.py``; where they differ on purpose, the
class says so.
"""

from __future__ import annotations

import abc
import difflib
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl

from quarry._dates import to_date
from quarry.exceptions import NotFittedError, UsageError

__all__ = [
    "PROCESSORS",
    "CSRankNorm",
    "CSZScoreNorm",
    "DropnaLabel",
    "Fillna",
    "IndustryNeutralize",
    "Pipeline",
    "ProcessInf",
    "Processor",
    "RobustZScoreNorm",
    "Winsorize",
    "ZScoreNorm",
]

KEYS = ("instrument", "date")
DATE = "date"
LABEL = "LABEL0"
# Qlib's constants: the MAD of a normal sample times 1.4826 estimates its standard deviation;
# (rank_pct - 0.5) * 3.46 has about unit standard deviation (1 / sqrt(1/12) = 3.4641).
MAD_TO_STD = 1.4826
RANK_SCALE = 3.46
EPS = 1e-12

Fields = str | Sequence[str]
DateLike = date | str
ArrayStep = Callable[[np.ndarray], None]  # transforms a matrix in place


def _missing_as_null(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64).fill_nan(None)


def _nan_to_null(e: pl.Expr) -> pl.Expr:
    return e.fill_nan(None)


def _stats(learned: Mapping[str, float | None], columns: Sequence[str]) -> np.ndarray:
    """A learned statistic of each of ``columns`` as a row, NaN where none was learned."""
    return np.array([np.nan if learned[c] is None else learned[c] for c in columns], np.float64)


def _suggest(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _as_date(value: object, what: str) -> date:
    found = to_date(value)
    if found is not None:
        return found
    raise UsageError(f"{what}: cannot read {value!r} as a date; use YYYY-MM-DD")


def _as_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{what} must be a number, not {value!r}")
    return float(value)


def _as_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{what} must be true or false, not {value!r}")
    return value


def _as_choice(value: object, what: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = _suggest(value, choices) if isinstance(value, str) else ""
        raise UsageError(f"{what} must be one of {', '.join(choices)}, not {value!r}{hint}")
    return value


def _as_names(value: object, what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else value
    if (
        not isinstance(names, Sequence)
        or not names
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise UsageError(f"{what} must be a column name or a non-empty list of them, not {value!r}")
    return tuple(names)


def _as_fields(value: object) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if value in ("features", "label"):
            return value
        raise UsageError(
            f"fields must be 'features', 'label' or a list of column names, not {value!r}"
            f"{_suggest(value, ['features', 'label'])} (for one column, write [{value!r}])"
        )
    return _as_names(value, "fields")


class Processor(abc.ABC):
    """A step that cleans or normalizes columns of a long frame; see the module docstring.

    Parameters shared by every processor
    ------------------------------------
    fields : "features", "label" or a list of column names
        The columns to process.
    label : str or list of str, default "LABEL0"
        The label columns: left alone by ``fields="features"``, picked by ``fields="label"``.
    """

    # The constructor's parameters, in order: what get_params, to_dict and from_dict use.
    _PARAMS: ClassVar[tuple[str, ...]] = ("fields", "label")
    #: False for a processor that only makes sense while learning (it drops rows by label).
    for_inference: ClassVar[bool] = True

    fields: str | tuple[str, ...]
    label: tuple[str, ...]

    def __init__(self, *, fields: Fields = "features", label: str | Sequence[str] = LABEL) -> None:
        # Parameters are checked here rather than in fit (as scikit-learn does): they cannot
        # change after construction, so a bad workflow file fails before any data is read.
        self.fields = _as_fields(fields)
        self.label = _as_names(label, "label")

    def __setattr__(self, name: str, value: object) -> None:
        if name in type(self)._PARAMS and name in self.__dict__:
            raise AttributeError(
                f"{type(self).__name__}.{name} is fixed once the processor is built; "
                "build a new one instead"
            )
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # -- configuration ---------------------------------------------------------------------

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters, by name."""
        return {name: getattr(self, name) for name in type(self)._PARAMS}

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (``name`` and the parameters), for YAML or JSON.

        Learned statistics are not included: fit the processor again after ``from_dict``.
        """
        out: dict[str, Any] = {"name": type(self).__name__}
        for key, value in self.get_params().items():
            if isinstance(value, date):
                value = value.isoformat()
            elif key == "label" and len(value) == 1:
                value = value[0]
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Processor:
        """Build the processor that ``data["name"]`` names, from its ``to_dict`` form.

        Unknown names and parameters raise UsageError naming the closest valid one.
        """
        if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
            raise UsageError(
                f"a processor must be a mapping with a 'name' (one of {', '.join(PROCESSORS)}), "
                f"not {data!r}"
            )
        name = data["name"]
        klass = PROCESSORS.get(name)
        if klass is None:
            raise UsageError(
                f"unknown processor {name!r}{_suggest(name, list(PROCESSORS))} "
                f"(processors: {', '.join(PROCESSORS)})"
            )
        if not issubclass(klass, cls):
            raise UsageError(f"{name} is not a {cls.__name__}")
        kwargs = {k: v for k, v in data.items() if k != "name"}
        for key in kwargs:
            if key not in klass._PARAMS:
                raise UsageError(
                    f"{name}: unknown parameter {key!r}{_suggest(key, klass._PARAMS)} "
                    f"(parameters: {', '.join(klass._PARAMS)})"
                )
        return klass(**kwargs)

    # -- the estimator protocol --------------------------------------------------------------

    def fit(self, frame: pl.DataFrame) -> Self:
        """Learn what the processor needs from ``frame`` (nothing, for a stateless one)."""
        self._columns(frame)
        return self

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Return a new frame with the processor applied."""
        return self._transform(frame, self._columns(frame))

    def fit_transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``fit(frame)``, then ``transform(frame)``."""
        return self.fit(frame).transform(frame)

    @abc.abstractmethod
    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame: ...

    # -- rows as a matrix ----------------------------------------------------------------------

    @property
    def row_wise(self) -> bool:
        """True when each row is transformed on its own, so ``transform_array`` applies."""
        return False

    def transform_array(self, x: np.ndarray, columns: Sequence[str]) -> np.ndarray:
        """Transform ``x`` in place and return it: rows by ``columns``, float64, NaN for a
        missing value; the values are those ``transform`` gives the same rows of a frame (NaN
        where it gives null). Only for a ``row_wise`` processor."""
        if x.dtype != np.float64 or not x.flags.writeable:
            raise UsageError(
                f"{type(self).__name__}.transform_array: give a writable float64 matrix, not "
                f"{x.dtype}{'' if x.flags.writeable else ' (read-only)'}; np.array(x, "
                "dtype=np.float64) makes one"
            )
        self.array_step(columns)(x)
        return x

    def array_step(self, columns: Sequence[str]) -> ArrayStep:
        """``transform_array`` for matrices of ``columns``, prepared once (the columns picked,
        the statistics as arrays): what a server calls for every request."""
        if not self.row_wise:
            raise UsageError(
                f"{type(self).__name__} reads whole dates (or drops rows), not one row at a "
                "time: transform a frame instead"
            )
        index = {c: i for i, c in enumerate(columns)}
        picked = self._array_columns(columns)
        at = [index[c] for c in picked]
        # every column, in order: the matrix itself, not a copy of its columns
        where: slice | np.ndarray = (slice(None) if at == list(range(len(columns)))
                                     else np.asarray(at, dtype=np.intp))  # fmt: skip
        return self._array_step(where, picked)

    def _array_step(self, at: slice | np.ndarray, columns: tuple[str, ...]) -> ArrayStep:
        raise NotImplementedError  # only row-wise processors have one

    def _array_columns(self, columns: Sequence[str]) -> tuple[str, ...]:
        """The columns ``fields`` picks among ``columns`` (all of them numbers)."""
        if self.fields == "features":
            excluded = self._excluded()
            return tuple(c for c in columns if c not in excluded)
        names = self.label if self.fields == "label" else self.fields
        assert isinstance(names, tuple)
        missing = [n for n in names if n not in columns]
        if missing:
            raise UsageError(
                f"{type(self).__name__}: no column {missing[0]!r} among the inputs"
                f"{_suggest(missing[0], columns)}"
            )
        return names

    # -- helpers -----------------------------------------------------------------------------

    def _excluded(self) -> set[str]:
        """Columns that "features" never picks."""
        return {*KEYS, *self.label}

    def _columns(self, frame: pl.DataFrame) -> tuple[str, ...]:
        """The columns ``fields`` picks in ``frame``, checked."""
        where = type(self).__name__
        missing_keys = [k for k in KEYS if k not in frame.columns]
        if missing_keys:
            raise UsageError(
                f"{where}: the frame has no {', '.join(missing_keys)} column; processors need a "
                "long frame with instrument, date and feature columns"
            )
        if self.fields == "features":
            excluded = self._excluded()
            columns = tuple(
                c for c, t in frame.schema.items() if c not in excluded and t.is_float()
            )
            if not columns:
                raise UsageError(
                    f"{where}: the frame has no feature columns (floating-point columns other "
                    f"than instrument, date and the label {', '.join(self.label)}); "
                    f"columns: {', '.join(frame.columns)}"
                )
            return columns
        names = self.label if self.fields == "label" else self.fields
        assert isinstance(names, tuple)
        for name in names:
            if name not in frame.columns:
                what = "label column" if self.fields == "label" else "column"
                raise UsageError(
                    f"{where}: no {what} {name!r} in the frame{_suggest(name, frame.columns)} "
                    f"(columns: {', '.join(frame.columns)})"
                )
            if name in KEYS:
                raise UsageError(f"{where}: {name!r} cannot be processed; it is a key column")
            if not frame.schema[name].is_numeric():
                raise UsageError(
                    f"{where}: column {name!r} is {frame.schema[name]}, not a number; "
                    "only numeric columns can be processed"
                )
        return names


def _fit_window(p: Processor, frame: pl.DataFrame, start: date, end: date) -> pl.DataFrame:
    """The rows of ``frame`` dated ``start``..``end``; there must be some."""
    window = frame.filter(pl.col(DATE).is_between(start, end))
    if window.height == 0:
        dates = frame.select(pl.col(DATE).min().alias("lo"), pl.col(DATE).max().alias("hi"))
        lo, hi = dates.row(0)
        span = f"the frame's dates run {lo}..{hi}" if frame.height else "the frame is empty"
        raise UsageError(
            f"{type(p).__name__}: the fit window {start}..{end} holds no rows ({span}); "
            "pass a window inside the training data"
        )
    return window


def _fitted_columns(p: Processor, state: str, available: Sequence[str]) -> tuple[str, ...]:
    """The columns ``p`` was fitted on, all among ``available`` (a frame's columns, or a
    matrix's); else a NotFittedError or a UsageError."""
    if state not in p.__dict__:
        raise NotFittedError(
            f"{type(p).__name__} is not fitted; call fit(train_frame) before transform"
        )
    columns = tuple(getattr(p, state))
    missing = [c for c in columns if c not in available]
    if missing:
        raise UsageError(
            f"{type(p).__name__}: the frame lacks {', '.join(missing)}, which the processor was "
            "fitted on"
        )
    return columns


class _Fitted(Processor):
    """A processor that learns statistics over the rows dated ``fit_start`` to ``fit_end``."""

    _PARAMS: ClassVar[tuple[str, ...]] = ("fit_start", "fit_end", "fields", "label")

    fit_start: date
    fit_end: date
    columns_: tuple[str, ...]

    def __init__(
        self,
        *,
        fit_start: DateLike,
        fit_end: DateLike,
        fields: Fields = "features",
        label: str | Sequence[str] = LABEL,
    ) -> None:
        super().__init__(fields=fields, label=label)
        self.fit_start = _as_date(fit_start, f"{type(self).__name__} fit_start")
        self.fit_end = _as_date(fit_end, f"{type(self).__name__} fit_end")
        if self.fit_start > self.fit_end:
            raise UsageError(
                f"{type(self).__name__}: fit_start {self.fit_start} is after fit_end {self.fit_end}"
            )

    def fit(self, frame: pl.DataFrame) -> Self:
        columns = self._columns(frame)
        self._fit(_fit_window(self, frame, self.fit_start, self.fit_end), columns)
        self.columns_ = columns
        return self

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        return self._transform(frame, _fitted_columns(self, "columns_", frame.columns))

    @property
    def row_wise(self) -> bool:
        return True

    def _array_columns(self, columns: Sequence[str]) -> tuple[str, ...]:
        return _fitted_columns(self, "columns_", columns)

    @abc.abstractmethod
    def _fit(self, window: pl.DataFrame, columns: tuple[str, ...]) -> None: ...


# -- stateless processors ---------------------------------------------------------------------


class Fillna(Processor):
    """Replace missing values (NaN or null) with ``value`` (0 by default).

    Unlike Qlib's ``Fillna(fields_group=None)``, which fills every column, labels included,
    the default here fills the features only.
    """

    _PARAMS: ClassVar[tuple[str, ...]] = ("value", "fields", "label")

    value: float

    def __init__(
        self,
        *,
        value: float = 0.0,
        fields: Fields = "features",
        label: str | Sequence[str] = LABEL,
    ) -> None:
        super().__init__(fields=fields, label=label)
        self.value = _as_float(value, "Fillna value")

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        return frame.with_columns(_missing_as_null(c).fill_null(self.value) for c in columns)

    @property
    def row_wise(self) -> bool:
        return True

    def _array_step(self, at: slice | np.ndarray, columns: tuple[str, ...]) -> ArrayStep:
        value = self.value

        def step(x: np.ndarray) -> None:
            part = x[:, at]  # a view when every column is filled: written in place
            np.copyto(part, value, where=np.isnan(part))
            if not isinstance(at, slice):
                x[:, at] = part

        return step


class DropnaLabel(Processor):
    """Drop the rows whose label (any of the ``fields`` columns) is missing.

    For learning only, never at inference: the label of the latest dates is not known yet, so
    dropping by label would drop exactly the rows to predict. ``for_inference`` is False, and
    ``Pipeline.transform(frame, inference=True)`` skips it.
    """

    for_inference = False

    def __init__(self, *, fields: Fields = "label", label: str | Sequence[str] = LABEL) -> None:
        super().__init__(fields=fields, label=label)

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        keep = pl.all_horizontal(_missing_as_null(c).is_not_null() for c in columns)
        return frame.filter(keep)


class CSZScoreNorm(Processor):
    """Per date: ``(x - mean) / std`` (``method="zscore"``, std with ddof = 1 as pandas), or
    ``(x - median) / MAD / 1.4826`` clipped to [-3, 3] (``method="robust"``).

    As in Qlib, "robust" clips and adds no epsilon: on a date whose MAD is 0 the values off the
    median become -3 or 3 and those on it missing. A date with a single value, or with a zero
    standard deviation, gives missing values under "zscore".
    """

    _PARAMS: ClassVar[tuple[str, ...]] = ("method", "fields", "label")
    METHODS: ClassVar[tuple[str, ...]] = ("zscore", "robust")

    method: str

    def __init__(
        self,
        *,
        method: str = "zscore",
        fields: Fields = "features",
        label: str | Sequence[str] = LABEL,
    ) -> None:
        super().__init__(fields=fields, label=label)
        self.method = _as_choice(method, "CSZScoreNorm method", self.METHODS)

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        return frame.with_columns(self._one(c).alias(c) for c in columns)

    def _one(self, column: str) -> pl.Expr:
        x = _missing_as_null(column)
        if self.method == "zscore":
            return _nan_to_null(((x - x.mean()) / x.std(ddof=1)).over(DATE))
        centred = x - x.median().over(DATE)
        z = centred / centred.abs().median().over(DATE) / MAD_TO_STD
        return _nan_to_null(z).clip(-3.0, 3.0)


class CSRankNorm(Processor):
    """Per date: ``(rank_pct - 0.5) * 3.46``, Qlib's rank normalization.

    ``rank_pct`` is pandas' ``rank(pct=True)``: the average rank of ties divided by the number
    of non-missing values that date; missing values stay missing.
    """

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        def one(column: str) -> pl.Expr:
            x = _missing_as_null(column)
            pct = (x.rank("average") / x.count()).over(DATE)
            return ((pct - 0.5) * RANK_SCALE).alias(column)

        return frame.with_columns(one(c) for c in columns)


class IndustryNeutralize(Processor):
    """Per date, the residual of each column after a regression on industry dummies, which is
    the value less the mean of its industry that date. Rows with no industry come out missing.

    Not a Qlib processor (Qlib has the cross-sectional operator only); it matches Quarry's
    ``CSNeutralize(x, $industry)`` operator, as a processor.
    """

    _PARAMS: ClassVar[tuple[str, ...]] = ("industry_col", "fields", "label")

    industry_col: str

    def __init__(
        self,
        *,
        industry_col: str = "industry",
        fields: Fields = "features",
        label: str | Sequence[str] = LABEL,
    ) -> None:
        super().__init__(fields=fields, label=label)
        if not isinstance(industry_col, str) or not industry_col:
            raise UsageError(
                f"IndustryNeutralize industry_col must be one column name, not {industry_col!r}"
            )
        self.industry_col = industry_col
        if isinstance(self.fields, tuple) and industry_col in self.fields:
            raise UsageError(
                f"IndustryNeutralize: {self.industry_col!r} is the industry column; it cannot "
                "also be neutralized"
            )

    def _excluded(self) -> set[str]:
        return {*super()._excluded(), self.industry_col}

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        if self.industry_col not in frame.columns:
            raise UsageError(
                f"IndustryNeutralize: no industry column {self.industry_col!r} in the frame"
                f"{_suggest(self.industry_col, frame.columns)} (columns: "
                f"{', '.join(frame.columns)})"
            )
        industry = pl.col(self.industry_col)

        def one(column: str) -> pl.Expr:
            x = _missing_as_null(column)
            resid = x - x.mean().over(DATE, self.industry_col)
            return pl.when(industry.is_not_null()).then(resid).alias(column)

        return frame.with_columns(one(c) for c in columns)


class ProcessInf(Processor):
    """Per date and column, replace +inf and -inf with the mean of that column's finite values
    that date (missing when there are none), as Qlib's ``ProcessInf``."""

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        def one(column: str) -> pl.Expr:
            x = _missing_as_null(column)
            finite_mean = x.filter(x.is_finite()).mean().over(DATE)
            return pl.when(x.is_infinite()).then(finite_mean).otherwise(x).alias(column)

        return frame.with_columns(one(c) for c in columns)


# -- fitted processors ------------------------------------------------------------------------


class RobustZScoreNorm(_Fitted):
    """``(x - median) / scale`` per column, clipped to [-3, 3] when ``clip_outlier``.

    Fitted over the rows dated ``fit_start``..``fit_end``: ``center_`` is each column's median
    and ``scale_`` is ``(MAD + 1e-12) * 1.4826``, Qlib's formula (the epsilon is added before
    the scaling). A column with no values in the window comes out missing.
    """

    _PARAMS: ClassVar[tuple[str, ...]] = ("fit_start", "fit_end", "clip_outlier", "fields", "label")

    clip_outlier: bool
    center_: dict[str, float | None]
    scale_: dict[str, float | None]

    def __init__(
        self,
        *,
        fit_start: DateLike,
        fit_end: DateLike,
        clip_outlier: bool = True,
        fields: Fields = "features",
        label: str | Sequence[str] = LABEL,
    ) -> None:
        super().__init__(fit_start=fit_start, fit_end=fit_end, fields=fields, label=label)
        self.clip_outlier = _as_bool(clip_outlier, "RobustZScoreNorm clip_outlier")

    def _fit(self, window: pl.DataFrame, columns: tuple[str, ...]) -> None:
        x = window.select(_missing_as_null(c) for c in columns)
        center = x.select(pl.all().median()).row(0, named=True)
        mad = x.select(
            (pl.col(c) - center[c]).abs().median() if center[c] is not None else pl.lit(None)
            for c in columns
        ).row(0)
        self.center_ = dict(center)
        self.scale_ = {
            c: None if m is None else (m + EPS) * MAD_TO_STD
            for c, m in zip(columns, mad, strict=True)
        }

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        def one(column: str) -> pl.Expr:
            center, scale = self.center_[column], self.scale_[column]
            if center is None or scale is None:
                return pl.lit(None, pl.Float64).alias(column)
            # times the reciprocal, as Polars computes a division by a constant anyway: the
            # matrix form does the same arithmetic, so that both give the same bits
            z = _nan_to_null((_missing_as_null(column) - center) * (1.0 / scale))
            return (z.clip(-3.0, 3.0) if self.clip_outlier else z).alias(column)

        return frame.with_columns(one(c) for c in columns)

    def _array_step(self, at: slice | np.ndarray, columns: tuple[str, ...]) -> ArrayStep:
        center, inverse = _stats(self.center_, columns), 1.0 / _stats(self.scale_, columns)
        clip = self.clip_outlier

        def step(x: np.ndarray) -> None:
            with np.errstate(invalid="ignore"):  # inf - inf is NaN, as in Polars
                z = (x[:, at] - center) * inverse
            x[:, at] = np.clip(z, -3.0, 3.0) if clip else z

        return step


class ZScoreNorm(_Fitted):
    """``(x - mean) / std`` per column, with the mean and the standard deviation (ddof = 0, as
    ``np.nanstd``) of the rows dated ``fit_start``..``fit_end``.

    A column whose standard deviation in the window is 0 is left as it is (Qlib skips it too);
    one with no values in the window comes out missing.
    """

    mean_: dict[str, float | None]
    std_: dict[str, float | None]

    def _fit(self, window: pl.DataFrame, columns: tuple[str, ...]) -> None:
        x = window.select(_missing_as_null(c) for c in columns)
        self.mean_ = dict(x.select(pl.all().mean()).row(0, named=True))
        self.std_ = dict(x.select(pl.all().std(ddof=0)).row(0, named=True))

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        def one(column: str) -> pl.Expr:
            mean, std = self.mean_[column], self.std_[column]
            x = _missing_as_null(column)
            if mean is None or std is None:
                return pl.lit(None, pl.Float64).alias(column)
            if std == 0:
                return x.alias(column)
            return _nan_to_null((x - mean) * (1.0 / std)).alias(column)  # as RobustZScoreNorm

        return frame.with_columns(one(c) for c in columns)

    def _array_step(self, at: slice | np.ndarray, columns: tuple[str, ...]) -> ArrayStep:
        mean, std = _stats(self.mean_, columns), _stats(self.std_, columns)
        keep = std == 0  # left as it is (NaN, a column with nothing learned, is not kept)
        inverse = 1.0 / np.where(keep, 1.0, std)

        def step(x: np.ndarray) -> None:
            part = x[:, at]
            with np.errstate(invalid="ignore"):
                z = (part - mean) * inverse
            x[:, at] = np.where(keep, part, z)

        return step


class Winsorize(Processor):
    """Clip each column at its ``lower`` and ``upper`` quantiles (linear interpolation, as
    pandas' ``quantile``).

    ``by="date"`` (the default) takes the quantiles of each date's cross-section and learns
    nothing; ``by="fit"`` learns one pair per column from the rows dated
    ``fit_start``..``fit_end``, which it then needs. Not a Qlib processor.
    """

    _PARAMS: ClassVar[tuple[str, ...]] = (
        "lower",
        "upper",
        "by",
        "fit_start",
        "fit_end",
        "fields",
        "label",
    )
    BY: ClassVar[tuple[str, ...]] = ("date", "fit")

    lower: float
    upper: float
    by: str
    fit_start: date | None
    fit_end: date | None
    bounds_: dict[str, tuple[float | None, float | None]]

    def __init__(
        self,
        *,
        lower: float = 0.01,
        upper: float = 0.99,
        by: str = "date",
        fit_start: DateLike | None = None,
        fit_end: DateLike | None = None,
        fields: Fields = "features",
        label: str | Sequence[str] = LABEL,
    ) -> None:
        super().__init__(fields=fields, label=label)
        self.lower = _as_float(lower, "Winsorize lower")
        self.upper = _as_float(upper, "Winsorize upper")
        if not 0.0 <= self.lower < self.upper <= 1.0:
            raise UsageError(
                f"Winsorize: need 0 <= lower < upper <= 1, not lower={self.lower}, "
                f"upper={self.upper}"
            )
        self.by = _as_choice(by, "Winsorize by", self.BY)
        if self.by == "fit":
            if fit_start is None or fit_end is None:
                raise UsageError("Winsorize(by='fit') needs fit_start and fit_end")
            self.fit_start = _as_date(fit_start, "Winsorize fit_start")
            self.fit_end = _as_date(fit_end, "Winsorize fit_end")
            if self.fit_start > self.fit_end:
                raise UsageError(
                    f"Winsorize: fit_start {self.fit_start} is after fit_end {self.fit_end}"
                )
        else:
            if fit_start is not None or fit_end is not None:
                raise UsageError(
                    "Winsorize: fit_start and fit_end apply only with by='fit'; by='date' "
                    "clips each date at its own quantiles"
                )
            self.fit_start = self.fit_end = None

    def fit(self, frame: pl.DataFrame) -> Self:
        columns = self._columns(frame)
        if self.fit_start is not None and self.fit_end is not None:
            self._fit(_fit_window(self, frame, self.fit_start, self.fit_end), columns)
        return self

    def _fit(self, window: pl.DataFrame, columns: tuple[str, ...]) -> None:
        x = window.select(_missing_as_null(c) for c in columns)
        lo = x.select(pl.all().quantile(self.lower, "linear")).row(0)
        hi = x.select(pl.all().quantile(self.upper, "linear")).row(0)
        self.bounds_ = {c: (a, b) for c, a, b in zip(columns, lo, hi, strict=True)}

    def transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        if self.by == "date":
            return super().transform(frame)
        return self._transform(frame, _fitted_columns(self, "bounds_", frame.columns))

    def _transform(self, frame: pl.DataFrame, columns: tuple[str, ...]) -> pl.DataFrame:
        def one(column: str) -> pl.Expr:
            x = _missing_as_null(column)
            if self.by == "date":
                lo = x.quantile(self.lower, "linear").over(DATE)
                hi = x.quantile(self.upper, "linear").over(DATE)
                return x.clip(lo, hi).alias(column)
            a, b = self.bounds_[column]
            if a is None or b is None:
                return pl.lit(None, pl.Float64).alias(column)
            return x.clip(a, b).alias(column)

        return frame.with_columns(one(c) for c in columns)

    @property
    def row_wise(self) -> bool:
        return self.by == "fit"

    def _array_columns(self, columns: Sequence[str]) -> tuple[str, ...]:
        return _fitted_columns(self, "bounds_", columns)

    def _array_step(self, at: slice | np.ndarray, columns: tuple[str, ...]) -> ArrayStep:
        # a bound not learned (None) makes the column missing, as the frame's transform does;
        # a learned NaN (a quantile between -inf and a number) clips nothing, as Polars' clip
        unknown = np.array([None in self.bounds_[c] for c in columns], dtype=bool)
        lo = np.nan_to_num(_stats({c: self.bounds_[c][0] for c in columns}, columns),
                           nan=-np.inf, posinf=np.inf, neginf=-np.inf)  # fmt: skip
        hi = np.nan_to_num(_stats({c: self.bounds_[c][1] for c in columns}, columns),
                           nan=np.inf, posinf=np.inf, neginf=-np.inf)  # fmt: skip

        def step(x: np.ndarray) -> None:
            x[:, at] = np.where(unknown, np.nan, np.clip(x[:, at], lo, hi))

        return step


PROCESSORS: Mapping[str, type[Processor]] = {
    k.__name__: k
    for k in (
        CSRankNorm,
        CSZScoreNorm,
        DropnaLabel,
        Fillna,
        IndustryNeutralize,
        ProcessInf,
        RobustZScoreNorm,
        Winsorize,
        ZScoreNorm,
    )
}


# -- pipeline ---------------------------------------------------------------------------------


class Pipeline:
    """Processors applied in order; each is fitted on the output of the ones before it.

    ``fit(frame)`` fits the first step on ``frame``, transforms ``frame`` with it, fits the
    second on the result, and so on, as Qlib's handler does. Pass the whole history: each fitted
    step reads only its own fit window. ``transform(frame, inference=True)`` skips the label's
    steps and the steps
    that are for learning only (``DropnaLabel``).

    Examples
    --------
    >>> pipe = Pipeline([ProcessInf(), ZScoreNorm(fit_start="2020-01-01", fit_end="2020-06-30"),
    ...                  Fillna()])
    >>> Pipeline.from_dict(pipe.to_dict()).to_dict() == pipe.to_dict()
    True
    """

    steps: tuple[Processor, ...]

    def __init__(self, steps: Sequence[Processor]) -> None:
        bad = [s for s in steps if not isinstance(s, Processor)]
        if bad:
            raise UsageError(f"Pipeline steps must be processors, not {bad[0]!r}")
        object.__setattr__(self, "steps", tuple(steps))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Pipeline's steps are fixed once it is built; build a new one")

    def __repr__(self) -> str:
        return f"Pipeline({list(self.steps)!r})"

    def __len__(self) -> int:
        return len(self.steps)

    def fit(self, frame: pl.DataFrame) -> Self:
        """Fit every step in turn, each on the previous steps' output."""
        self.fit_transform(frame)
        return self

    def transform(self, frame: pl.DataFrame, *, inference: bool = False) -> pl.DataFrame:
        """Apply every step in order. With ``inference`` (scoring, where the label is what is
        predicted and not known), without the learning-only steps and those that only
        process the label."""
        for step in self._applied(inference):
            frame = step.transform(frame)
        return frame

    def _applied(self, inference: bool) -> list[Processor]:
        return [s for s in self.steps
                if not (inference and (not s.for_inference or s.fields == "label"))]  # fmt: skip

    def is_row_wise(self, *, inference: bool = False) -> bool:
        """True when every step applied transforms each row on its own, so
        ``transform_array`` applies."""
        return all(step.row_wise for step in self._applied(inference))

    def transform_array(
        self, x: np.ndarray, columns: Sequence[str], *, inference: bool = False
    ) -> np.ndarray:
        """Rows of ``columns`` (a matrix, NaN for missing) transformed as ``transform`` would
        transform a frame of them, as a new float64 matrix (NaN for missing); every step
        applied must be ``row_wise``."""
        return self.array_transformer(columns, inference=inference)(x)

    def array_transformer(
        self, columns: Sequence[str], *, inference: bool = False
    ) -> Callable[[np.ndarray], np.ndarray]:
        """``transform_array`` for matrices of ``columns``, every step prepared once."""
        steps = [step.array_step(columns) for step in self._applied(inference)]
        width = len(columns)

        def transform(x: np.ndarray) -> np.ndarray:
            out = np.array(x, dtype=np.float64, order="C")  # a copy: the caller's stays
            if out.ndim != 2 or out.shape[1] != width:
                raise UsageError(
                    f"Pipeline.transform_array: a matrix of {width} columns is needed, "
                    f"not one of shape {out.shape}"
                )
            for step in steps:
                step(out)
            return out

        return transform

    def fit_transform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Fit on ``frame`` and return it transformed (each step is applied once)."""
        for step in self.steps:
            frame = step.fit_transform(frame)
        return frame

    def to_dict(self) -> dict[str, Any]:
        """``{"steps": [...]}``, each step in its ``to_dict`` form."""
        return {"steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Pipeline:
        """Build a pipeline from ``{"steps": [...]}`` or from the list of steps itself."""
        if isinstance(data, Mapping):
            extra = [k for k in data if k != "steps"]
            if extra:
                raise UsageError(
                    f"Pipeline: unknown key {extra[0]!r}{_suggest(extra[0], ['steps'])}; "
                    "a pipeline is {steps: [...]}"
                )
            data = data.get("steps", [])
        if isinstance(data, str) or not isinstance(data, Sequence):
            raise UsageError(f"Pipeline steps must be a list of processors, not {data!r}")
        return cls([Processor.from_dict(d) for d in data])
