"""What a signal analysis reports, and the summaries made from its daily frames: shared by
the long-frame analysis (``_analysis``) and the dense-panel one (``_panel``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from quarry.exceptions import UsageError

__all__ = ["DATE", "SUMMARY_KEYS", "SignalReport", "ic_summary", "long_short"]

INSTRUMENT = "instrument"
DATE = "date"
SUMMARY_KEYS = ("ic", "icir", "rank_ic", "rank_icir", "ic_t", "rank_ic_t", "days")


def _require(frame: pl.DataFrame, columns: Sequence[str]) -> None:
    for name in columns:
        if name not in frame.columns:
            raise UsageError(
                f"column {name!r} not found; the frame has columns "
                f"{', '.join(frame.columns) or '(none)'}"
            )
        dtype = frame.schema[name]
        if name not in (INSTRUMENT, DATE) and not dtype.is_numeric():
            raise UsageError(f"column {name!r} must be numeric, not {dtype}")


def _finite_values(series: pl.Series) -> npt.NDArray[np.float64]:
    values = np.asarray(series.cast(pl.Float64).drop_nulls().to_numpy(), dtype=np.float64)
    return values[np.isfinite(values)]


def _mean(series: pl.Series) -> float:
    values = _finite_values(series)
    return float(values.mean()) if values.size else math.nan


def ic_summary(daily: pl.DataFrame) -> dict[str, float]:
    """Means, information ratios and t-statistics of a ``daily_ic`` frame.

    Days with a null IC are skipped. ``icir = mean / std`` with ``ddof=1``, and
    ``ic_t = mean / (std / sqrt(days)) = icir * sqrt(days)``; likewise for the Rank IC.
    ``days`` counts the days with an IC. A statistic that cannot be computed (no days; one day
    or a zero standard deviation for the ratios) is NaN.

    Returns
    -------
    dict[str, float]
        Keys ``ic``, ``icir``, ``rank_ic``, ``rank_icir``, ``ic_t``, ``rank_ic_t``, ``days``.
    """
    _require(daily, ("ic", "rank_ic"))
    out: dict[str, float] = {}
    for name in ("ic", "rank_ic"):
        values = _finite_values(daily[name])
        days = values.size
        mean = float(values.mean()) if days else math.nan
        std = float(values.std(ddof=1)) if days >= 2 else math.nan
        ratio = mean / std if std > 0 else math.nan
        out[name] = mean
        out[f"{name}ir"] = ratio
        out[f"{name}_t"] = ratio * math.sqrt(days)
        if name == "ic":
            out["days"] = float(days)
    return {key: out[key] for key in SUMMARY_KEYS}


def long_short(qr: pl.DataFrame) -> pl.DataFrame:
    """The top group's mean return minus the bottom group's, per date, from ``quantile_returns``.

    The top group is the highest group number in ``qr``; a date missing either group gets null.

    Returns
    -------
    pl.DataFrame
        ``date``, ``spread``; sorted by date.
    """
    _require(qr, (DATE, "group", "mean_return"))
    top = qr["group"].max()
    if top is None:  # no date has groups
        return pl.DataFrame(schema={DATE: qr.schema[DATE], "spread": pl.Float64})
    ret = pl.col("mean_return")
    return (
        qr.group_by(DATE)
        .agg(
            (
                ret.filter(pl.col("group") == top).first()
                - ret.filter(pl.col("group") == 1).first()
            ).alias("spread")
        )
        .sort(DATE)
    )


@dataclass(frozen=True, eq=False)
class SignalReport:
    """Everything ``analyze`` computes about one score.

    Compared by identity (``eq=False``): the frames it holds have no truth value.

    Attributes
    ----------
    summary
        ``ic_summary`` of ``daily_ic``.
    daily_ic, quantile_returns, long_short, autocorr, turnover
        The frames of the functions of those names.
    """

    summary: dict[str, float]
    daily_ic: pl.DataFrame
    quantile_returns: pl.DataFrame
    long_short: pl.DataFrame
    autocorr: pl.DataFrame
    turnover: pl.DataFrame

    def as_dict(self) -> dict[str, float]:
        """The headline numbers, for ``metrics.json``.

        Keys ``ic``, ``icir``, ``rank_ic``, ``rank_icir``, ``ic_t``, ``rank_ic_t`` (from the
        summary), and the means over dates (skipping nulls) of the long-short spread, the
        autocorrelation and the top group's turnover: ``long_short_mean``, ``autocorr_mean``,
        ``turnover_mean``. A number that cannot be computed is NaN.
        """
        out = {key: self.summary[key] for key in SUMMARY_KEYS if key != "days"}
        out["long_short_mean"] = _mean(self.long_short["spread"])
        out["autocorr_mean"] = _mean(self.autocorr["autocorr"])
        out["turnover_mean"] = _mean(self.turnover["top_turnover"])
        return out

    def _repr_html_(self) -> str:
        """A notebook's view: the summary, a chart of the IC and Rank IC (rolling means) and
        each quantile group's mean return (``_html_view``)."""
        from quarry.signals._html_view import signal_html

        figures = {**self.summary, **self.as_dict()}
        return signal_html(figures, self.daily_ic, self.quantile_returns, self.long_short)


def _positive_int(value: object, what: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UsageError(f"{what} must be an integer of at least {least}, not {value!r}")
    return value
