"""Feature processors against plain pandas/numpy references written from Qlib's definitions."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from quarry.exceptions import NotFittedError, UsageError
from quarry.features._processors import (
    PROCESSORS,
    CSRankNorm,
    CSZScoreNorm,
    DropnaLabel,
    Fillna,
    IndustryNeutralize,
    Pipeline,
    ProcessInf,
    Processor,
    RobustZScoreNorm,
    Winsorize,
    ZScoreNorm,
)

FEATURES = ["f1", "f2", "f3"]
FIT_START, FIT_END = date(2021, 1, 4), date(2021, 1, 8)


def make_frame(seed: int = 0, n_inst: int = 12, n_days: int = 10) -> pl.DataFrame:
    """Instruments x business days, three features on different scales, a label, an
    industry; about 15% missing, written half as NaN and half as null, some ties."""
    rng = np.random.default_rng(seed)
    days = list(pd.bdate_range("2021-01-04", periods=n_days).date)
    n = n_inst * n_days
    inst = np.repeat([f"I{i:02d}" for i in range(n_inst)], n_days)
    dates = days * n_inst
    cols = {
        "f1": rng.normal(0, 1, n),
        "f2": rng.standard_t(3, n) * 5 + 2,  # heavy tails, for the robust ones
        "f3": np.round(rng.normal(0, 1, n), 1),  # ties, for the ranks
        "LABEL0": rng.normal(0, 0.02, n),
    }
    data: dict[str, object] = {"instrument": inst, "date": dates}
    nulls = {}
    for name, values in cols.items():
        gone = rng.random(n) < 0.15
        as_null = gone & (rng.random(n) < 0.5)
        values[gone & ~as_null] = np.nan
        data[name] = values
        nulls[name] = as_null
    industry = rng.choice(["bank", "tech", "energy"], n).astype(object)
    industry[rng.random(n) < 0.1] = None
    data["industry"] = industry
    frame = pl.DataFrame(data)
    return frame.with_columns(
        pl.when(pl.Series(nulls[c])).then(None).otherwise(pl.col(c)).alias(c) for c in cols
    ).sort("instrument", "date")


@pytest.fixture
def frame() -> pl.DataFrame:
    return make_frame()


def to_pd(frame: pl.DataFrame) -> pd.DataFrame:
    """pandas view: nulls and NaNs both NaN."""
    return frame.to_pandas()


def check(out: pl.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    """Same values as the reference (missing as missing), and no NaN left: only nulls."""
    for c in columns:
        assert out[c].dtype == pl.Float64, c
        assert out[c].is_nan().sum() == 0, f"{c} holds NaN instead of null"
        got, want = out[c].to_numpy(), expected[c].to_numpy(dtype=float)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=c)


def untouched(out: pl.DataFrame, frame: pl.DataFrame, columns: list[str]) -> None:
    assert_frame_equal(out.select(columns), frame.select(columns))


# -- references ----------------------------------------------------------------------------


def ref_cs(df: pd.DataFrame, columns: list[str], fn: object) -> pd.DataFrame:
    out = df.copy()
    for c in columns:
        out[c] = df.groupby("date")[c].transform(fn)
    return out


def ref_robust_cs(x: pd.Series) -> pd.Series:
    centred = x - x.median()
    mad = centred.abs().median()
    return np.clip(centred / mad / 1.4826, -3, 3)


def in_window(df: pd.DataFrame, start: date = FIT_START, end: date = FIT_END) -> pd.DataFrame:
    d = pd.to_datetime(df["date"]).dt.date
    return df[(d >= start) & (d <= end)]


# -- stateless processors --------------------------------------------------------------------


def test_fillna(frame: pl.DataFrame) -> None:
    out = Fillna(value=-7.5).fit_transform(frame)
    exp = to_pd(frame)
    exp[FEATURES] = exp[FEATURES].fillna(-7.5)
    check(out, exp, FEATURES)
    assert out.select(FEATURES).null_count().sum_horizontal().item() == 0
    untouched(out, frame, ["instrument", "date", "LABEL0", "industry"])


def test_fillna_label_only(frame: pl.DataFrame) -> None:
    out = Fillna(fields="label").transform(frame)
    exp = to_pd(frame)
    exp["LABEL0"] = exp["LABEL0"].fillna(0.0)
    check(out, exp, ["LABEL0"])
    untouched(out, frame, FEATURES)


def test_dropna_label(frame: pl.DataFrame) -> None:
    out = DropnaLabel().transform(frame)
    exp = to_pd(frame).dropna(subset=["LABEL0"])
    assert out.height == len(exp) < frame.height
    assert out["instrument"].to_list() == exp["instrument"].tolist()
    check(out, exp, ["LABEL0"])
    untouched(out, frame.filter(pl.col("LABEL0").fill_nan(None).is_not_null()), FEATURES)
    assert not DropnaLabel.for_inference


def test_dropna_label_custom_name(frame: pl.DataFrame) -> None:
    renamed = frame.rename({"LABEL0": "ret5"})
    out = DropnaLabel(label="ret5").transform(renamed)
    assert out.height == to_pd(frame)["LABEL0"].notna().sum()
    with pytest.raises(UsageError, match="no label column 'LABEL0'"):
        DropnaLabel().transform(renamed)


@pytest.mark.parametrize("fields", ["features", "label"])
def test_cs_zscore(frame: pl.DataFrame, fields: str) -> None:
    columns = FEATURES if fields == "features" else ["LABEL0"]
    out = CSZScoreNorm(fields=fields).transform(frame)
    exp = ref_cs(to_pd(frame), columns, lambda x: (x - x.mean()) / x.std())
    check(out, exp, columns)
    other = ["LABEL0"] if fields == "features" else FEATURES
    untouched(out, frame, other)


def test_cs_zscore_robust(frame: pl.DataFrame) -> None:
    out = CSZScoreNorm(method="robust").transform(frame)
    exp = ref_cs(to_pd(frame), FEATURES, ref_robust_cs)
    check(out, exp, FEATURES)
    assert out["f2"].abs().max() == 3.0  # heavy tails get clipped


def test_cs_rank_norm(frame: pl.DataFrame) -> None:
    out = CSRankNorm().transform(frame)
    exp = ref_cs(to_pd(frame), FEATURES, lambda x: (x.rank(pct=True) - 0.5) * 3.46)
    check(out, exp, FEATURES)
    # Ties in f3 share their average rank.
    assert out.group_by("date").agg(pl.col("f3").n_unique() < pl.col("f3").count()).height


def test_industry_neutralize_is_regression_on_dummies(frame: pl.DataFrame) -> None:
    out = IndustryNeutralize().transform(frame)
    df = to_pd(frame)
    exp = df.copy()
    for c in FEATURES:
        exp[c] = np.nan
        for _, day in df.groupby("date"):
            ok = day[c].notna() & day["industry"].notna()
            dummies = pd.get_dummies(day.loc[ok, "industry"]).to_numpy(dtype=float)
            y = day.loc[ok, c].to_numpy()
            beta, *_ = np.linalg.lstsq(dummies, y, rcond=None)
            exp.loc[day.index[ok], c] = y - dummies @ beta
    check(out, exp, FEATURES)
    assert out.filter(pl.col("industry").is_null()).select(FEATURES).null_count().row(0) == (
        tuple([frame["industry"].null_count()] * 3)
    )


def test_industry_neutralize_needs_the_column(frame: pl.DataFrame) -> None:
    with pytest.raises(UsageError, match=r"no industry column 'sector'.*did you mean"):
        IndustryNeutralize(industry_col="sector").transform(frame.rename({"industry": "sectr"}))
    with pytest.raises(UsageError, match="cannot also be neutralized"):
        IndustryNeutralize(fields=["f1", "industry"])


def test_process_inf(frame: pl.DataFrame) -> None:
    rng = np.random.default_rng(1)
    where = rng.random(frame.height) < 0.1
    sign = np.where(rng.random(frame.height) < 0.5, np.inf, -np.inf)
    f1 = frame["f1"].to_numpy().copy()
    f1[where] = sign[where]
    # One date with only infinities: there is no finite mean, so it stays missing.
    first = (frame["date"] == FIT_START).to_numpy()
    f1[first] = np.inf
    with_inf = frame.with_columns(pl.Series("f1", f1))
    out = ProcessInf().transform(with_inf)

    df = to_pd(with_inf)
    exp = df.copy()
    for c in FEATURES:
        for _, day in df.groupby("date"):
            x = day[c]
            finite = x[np.isfinite(x)]
            exp.loc[day.index, c] = x.replace([np.inf, -np.inf], finite.mean())
    check(out, exp, FEATURES)
    assert not np.isinf(out["f1"].drop_nulls().to_numpy()).any()
    assert out.filter(pl.col("date") == FIT_START)["f1"].null_count() == first.sum()


@pytest.mark.parametrize(("lower", "upper"), [(0.01, 0.99), (0.1, 0.8)])
def test_winsorize_by_date(frame: pl.DataFrame, lower: float, upper: float) -> None:
    out = Winsorize(lower=lower, upper=upper).transform(frame)
    df = to_pd(frame)

    def clip(x: pd.Series) -> pd.Series:
        return x.clip(x.quantile(lower), x.quantile(upper))

    check(out, ref_cs(df, FEATURES, clip), FEATURES)


def test_winsorize_fitted(frame: pl.DataFrame) -> None:
    w = Winsorize(lower=0.05, upper=0.9, by="fit", fit_start=FIT_START, fit_end=FIT_END)
    with pytest.raises(NotFittedError, match="Winsorize is not fitted"):
        w.transform(frame)
    out = w.fit(frame).transform(frame)
    df = to_pd(frame)
    win = in_window(df)
    exp = df.copy()
    for c in FEATURES:
        exp[c] = df[c].clip(win[c].quantile(0.05), win[c].quantile(0.9))
    check(out, exp, FEATURES)
    assert_unchanged_outside_window(w, frame)


# -- fitted processors -----------------------------------------------------------------------


def test_robust_zscore_norm(frame: pl.DataFrame) -> None:
    p = RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END, clip_outlier=False)
    out = p.fit_transform(frame)
    df = to_pd(frame)
    x = in_window(df)[FEATURES].to_numpy()
    median = np.nanmedian(x, axis=0)
    scale = (np.nanmedian(np.abs(x - median), axis=0) + 1e-12) * 1.4826
    exp = df.copy()
    exp[FEATURES] = (df[FEATURES].to_numpy() - median) / scale
    check(out, exp, FEATURES)
    untouched(out, frame, ["LABEL0"])

    clipped = RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END).fit_transform(frame)
    exp[FEATURES] = np.clip(exp[FEATURES], -3, 3)
    check(clipped, exp, FEATURES)
    assert clipped["f2"].abs().max() == 3.0


def test_zscore_norm(frame: pl.DataFrame) -> None:
    # f3 is constant inside the window: its std is 0 and Qlib leaves it alone.
    in_fit = pl.col("date").is_between(FIT_START, FIT_END)
    data = frame.with_columns(pl.when(in_fit).then(2.0).otherwise(pl.col("f3")).alias("f3"))
    out = ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END).fit_transform(data)
    df = to_pd(data)
    x = in_window(df)[FEATURES].to_numpy()
    mean, std = np.nanmean(x, axis=0), np.nanstd(x, axis=0)
    assert std[2] == 0
    exp = df.copy()
    for i, c in enumerate(FEATURES):
        if std[i] != 0:
            exp[c] = (df[c] - mean[i]) / std[i]
    check(out, exp, FEATURES)
    assert out.filter(in_fit)["f1"].std(ddof=0) == pytest.approx(1.0)


FITTED = [
    lambda: RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END),
    lambda: RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END, clip_outlier=False),
    lambda: ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END),
    lambda: Winsorize(by="fit", fit_start=FIT_START, fit_end=FIT_END, lower=0.2, upper=0.7),
]


def assert_unchanged_outside_window(p: Processor, frame: pl.DataFrame) -> None:
    """Statistics come from the fit window only: scrambling every row outside it changes
    nothing for the rows inside, while changing a row inside does."""
    in_fit = pl.col("date").is_between(FIT_START, FIT_END)
    base = type(p).from_dict(p.to_dict()).fit(frame).transform(frame).filter(in_fit)
    scrambled = frame.with_columns(
        pl.when(in_fit).then(pl.col(c)).otherwise(pl.col(c) * 1000 + 50).alias(c) for c in FEATURES
    )
    again = type(p).from_dict(p.to_dict()).fit(scrambled).transform(frame).filter(in_fit)
    assert_frame_equal(again, base)
    inside = frame.with_columns(
        pl.when(in_fit).then(pl.col(c) * 1000 + 50).otherwise(pl.col(c)).alias(c) for c in FEATURES
    )
    moved = type(p).from_dict(p.to_dict()).fit(inside).transform(frame).filter(in_fit)
    assert not moved.select(FEATURES).equals(base.select(FEATURES))


@pytest.mark.parametrize("make", FITTED)
def test_fit_uses_the_window_only(frame: pl.DataFrame, make: object) -> None:
    assert callable(make)
    assert_unchanged_outside_window(make(), frame)


@pytest.mark.parametrize("make", FITTED)
def test_transform_before_fit(frame: pl.DataFrame, make: object) -> None:
    assert callable(make)
    p = make()
    with pytest.raises(NotFittedError, match=rf"^{type(p).__name__} is not fitted; call fit"):
        p.transform(frame)


@pytest.mark.parametrize("make", FITTED)
def test_empty_fit_window(frame: pl.DataFrame, make: object) -> None:
    assert callable(make)
    late = frame.filter(pl.col("date") > FIT_END)
    with pytest.raises(UsageError, match=rf"fit window {FIT_START}\.\.{FIT_END} holds no rows"):
        make().fit(late)


def test_fitted_applies_to_new_frames(frame: pl.DataFrame) -> None:
    """Fitted once on the training part, it transforms another frame with the same numbers."""
    train = frame.filter(pl.col("date") <= FIT_END)
    p = ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END).fit(train)
    test = frame.filter(pl.col("date") > FIT_END)
    out = p.transform(test)
    np.testing.assert_allclose(
        out["f1"].to_numpy(), ((test["f1"] - p.mean_["f1"]) / p.std_["f1"]).to_numpy()
    )
    with pytest.raises(UsageError, match="lacks f2"):
        p.transform(test.drop("f2"))


# -- configuration ---------------------------------------------------------------------------

CONFIGURED = [
    Fillna(value=1.5, fields=["f1", "f2"]),
    DropnaLabel(label="ret"),
    CSZScoreNorm(method="robust", fields="label"),
    CSRankNorm(fields="label", label=["LABEL0", "LABEL1"]),
    RobustZScoreNorm(fit_start="2021-01-04", fit_end=date(2021, 1, 8), clip_outlier=False),
    ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END, fields=["f3"]),
    Winsorize(lower=0.05, upper=0.95, by="fit", fit_start=FIT_START, fit_end=FIT_END),
    Winsorize(lower=0.02),
    IndustryNeutralize(industry_col="sector"),
    ProcessInf(),
]


def test_every_processor_is_configured_above() -> None:
    assert {type(p).__name__ for p in CONFIGURED} == set(PROCESSORS)


@pytest.mark.parametrize("p", CONFIGURED, ids=lambda p: type(p).__name__)
def test_round_trip(p: Processor) -> None:
    data = p.to_dict()
    assert data["name"] == type(p).__name__
    again = Processor.from_dict(data)
    assert type(again) is type(p)
    assert again.get_params() == p.get_params()
    assert again.to_dict() == data
    assert repr(again) == repr(p)
    # Plain data only: what a YAML or JSON file can hold.
    assert all(isinstance(v, str | int | float | bool | list | type(None)) for v in data.values())


def test_round_trip_reads_yaml_shapes() -> None:
    p = Processor.from_dict(
        {"name": "RobustZScoreNorm", "fit_start": date(2021, 1, 4), "fit_end": "2021-01-08"}
    )
    assert isinstance(p, RobustZScoreNorm)
    assert (p.fit_start, p.fit_end, p.clip_outlier) == (FIT_START, FIT_END, True)


def test_from_dict_names_the_closest() -> None:
    with pytest.raises(
        UsageError, match="unknown processor 'CSRankNrom'; did you mean 'CSRankNorm'"
    ):
        Processor.from_dict({"name": "CSRankNrom"})
    with pytest.raises(UsageError, match="unknown parameter 'feild'; did you mean 'fields'"):
        Processor.from_dict({"name": "Fillna", "feild": "label"})
    with pytest.raises(UsageError, match=r"method must be one of zscore, robust.*'robust'"):
        Processor.from_dict({"name": "CSZScoreNorm", "method": "robuts"})
    with pytest.raises(UsageError, match="'fields'"):
        Processor.from_dict({"fields": "label"})


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: ZScoreNorm(fit_start="2021-02-01", fit_end="2021-01-01"), "is after fit_end"),
        (
            lambda: ZScoreNorm(fit_start="2021/01/01", fit_end="2021-02-01"),
            "'2021/01/01' as a date",
        ),
        (lambda: Winsorize(lower=0.9, upper=0.1), "lower < upper"),
        (lambda: Winsorize(by="fit"), "needs fit_start and fit_end"),
        (lambda: Winsorize(fit_start=FIT_START, fit_end=FIT_END), "only with by='fit'"),
        (lambda: Fillna(fields="feature"), "did you mean 'features'"),
        (lambda: Fillna(value="zero"), "value must be a number"),
        (lambda: RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END, clip_outlier=1), "true"),
    ],
)
def test_bad_parameters(make: object, match: str) -> None:
    assert callable(make)
    with pytest.raises(UsageError, match=match):
        make()


def test_config_is_immutable() -> None:
    p = Fillna(value=1.0)
    with pytest.raises(AttributeError, match="fixed"):
        p.value = 2.0
    with pytest.raises(AttributeError, match="fixed"):
        p.fields = "label"
    pipe = Pipeline([p])
    with pytest.raises(AttributeError, match="fixed"):
        pipe.steps = ()


def test_unknown_columns(frame: pl.DataFrame) -> None:
    with pytest.raises(UsageError, match="no column 'f11' in the frame; did you mean 'f1'"):
        Fillna(fields=["f1", "f11"]).transform(frame)
    with pytest.raises(UsageError, match="'industry' is String, not a number"):
        Fillna(fields=["industry"]).transform(frame)
    with pytest.raises(UsageError, match="no feature columns"):
        Fillna().transform(frame.select("instrument", "date", "LABEL0"))


# -- pipeline --------------------------------------------------------------------------------


def test_pipeline_fits_each_step_on_the_previous_output(frame: pl.DataFrame) -> None:
    steps = [
        Fillna(),
        RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END),
        ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END),
        DropnaLabel(),
        CSRankNorm(fields="label"),
    ]
    out = Pipeline(steps).fit_transform(frame)

    # By hand, with pandas: fill, robust-scale on the window, z-score on the window of the
    # robust-scaled values, drop missing labels, rank the label.
    df = to_pd(frame)
    df[FEATURES] = df[FEATURES].fillna(0.0)
    x = in_window(df)[FEATURES].to_numpy()
    med = np.median(x, axis=0)
    df[FEATURES] = np.clip(
        (df[FEATURES] - med) / ((np.median(np.abs(x - med), axis=0) + 1e-12) * 1.4826), -3, 3
    )
    x = in_window(df)[FEATURES].to_numpy()
    df[FEATURES] = (df[FEATURES] - x.mean(axis=0)) / x.std(axis=0)
    df = df.dropna(subset=["LABEL0"])
    df["LABEL0"] = df.groupby("date")["LABEL0"].rank(pct=True).sub(0.5).mul(3.46)
    check(out, df, [*FEATURES, "LABEL0"])

    # fit then transform gives the same; the order of the steps matters.
    pipe = Pipeline(steps).fit(frame)
    assert_frame_equal(pipe.transform(frame), out)
    swapped = Pipeline([steps[2], steps[1], *steps[3:]]).fit_transform(frame)
    assert not swapped.equals(out)


def test_pipeline_inference_skips_learning_only_steps(frame: pl.DataFrame) -> None:
    pipe = Pipeline([ProcessInf(), DropnaLabel(), Fillna()]).fit(frame)
    assert pipe.transform(frame).height < frame.height
    infer = pipe.transform(frame, inference=True)
    assert infer.height == frame.height
    assert_frame_equal(infer, Fillna().transform(ProcessInf().transform(frame)))
    # the label's own steps too: scoring has no label
    labelled = Pipeline([CSRankNorm(fields="label"), Fillna()]).fit(frame)
    unlabelled = frame.drop("LABEL0")
    assert_frame_equal(labelled.transform(unlabelled, inference=True),
                       Fillna().transform(unlabelled))  # fmt: skip


def test_pipeline_round_trip_and_errors(frame: pl.DataFrame) -> None:
    pipe = Pipeline(CONFIGURED[:7])
    data = pipe.to_dict()
    again = Pipeline.from_dict(data)
    assert again.to_dict() == data
    assert Pipeline.from_dict(data["steps"]).to_dict() == data
    assert [type(s) for s in again.steps] == [type(s) for s in pipe.steps]
    with pytest.raises(UsageError, match="unknown key 'step'; did you mean 'steps'"):
        Pipeline.from_dict({"step": []})
    with pytest.raises(UsageError, match="did you mean 'ZScoreNorm'"):
        Pipeline.from_dict([{"name": "ZscoreNorm"}])
    with pytest.raises(NotFittedError, match="ZScoreNorm is not fitted"):
        Pipeline([ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END)]).transform(frame)


# -- rows as a matrix: the same values as the frame's transform ----------------------------------


def _adversarial(seed: int) -> pl.DataFrame:
    """make_frame, plus infinities, a column that is constant in the fit window, and one
    with no value in it (what the fitted statistics get wrong first)."""
    frame = make_frame(seed)
    rng = np.random.default_rng(seed + 100)
    n = frame.height
    f1 = frame["f1"].to_numpy().copy()
    f1[rng.random(n) < 0.05] = np.inf
    f1[rng.random(n) < 0.05] = -np.inf
    in_window = frame["date"].is_between(FIT_START, FIT_END).to_numpy()
    flat = np.where(in_window, 1.5, rng.normal(size=n))
    empty = np.where(in_window, np.nan, rng.normal(size=n))
    # mostly -inf in the window (a log of 0): its quantiles and median are -inf or NaN
    sink = np.where(in_window & (rng.random(n) < 0.9), -np.inf, rng.normal(size=n))
    return frame.with_columns(
        pl.Series("f1", f1), pl.Series("flat", flat), pl.Series("empty", empty),
        pl.Series("sink", sink),
    ).drop("industry")  # fmt: skip


ROW_WISE = [
    lambda: Fillna(value=-1.0),
    lambda: Fillna(fields=["f2"]),
    lambda: RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END),
    lambda: RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END, clip_outlier=False),
    lambda: ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END),
    lambda: Winsorize(by="fit", lower=0.1, upper=0.8, fit_start=FIT_START, fit_end=FIT_END),
]


@pytest.mark.parametrize("make", ROW_WISE)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_row_wise_processor_gives_a_matrix_the_frames_values(make, seed):
    frame = _adversarial(seed)
    step = make().fit(frame)
    assert step.row_wise
    columns = [c for c in frame.columns if c not in ("instrument", "date")]
    want = step.transform(frame).select(columns).to_numpy().astype(np.float64)
    x = frame.select(pl.col(columns).cast(pl.Float64)).to_numpy()
    got = step.transform_array(x, columns)
    assert got is x  # in place
    # bit for bit: serving scores the matrix, research the frame, and they must agree
    np.testing.assert_array_equal(got, want)


def test_a_pipeline_transforms_a_matrix_as_a_frame_rows_in_any_order():
    frame = _adversarial(3)
    pipe = Pipeline(
        [
            RobustZScoreNorm(fit_start=FIT_START, fit_end=FIT_END),
            Fillna(),
            DropnaLabel(),
            ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END, fields="label"),
        ]
    ).fit(frame)
    assert pipe.is_row_wise(inference=True)
    assert not pipe.is_row_wise()  # DropnaLabel drops rows: learning only
    columns = ["flat", "f3", "LABEL0", "f1", "sink", "empty", "f2"]  # not the frame's order
    want = pipe.transform(frame, inference=True).select(columns).to_numpy().astype(np.float64)
    x = frame.select(pl.col(columns).cast(pl.Float64)).to_numpy()
    before = x.copy()
    rows = np.arange(frame.height)[::-1]
    got = pipe.transform_array(x[rows], columns, inference=True)
    np.testing.assert_array_equal(got, want[rows])
    np.testing.assert_array_equal(x, before)  # the caller's matrix is left alone
    # one row alone scores as it does among the others: nothing is read across rows
    np.testing.assert_array_equal(pipe.transform_array(x[5:6], columns, inference=True), want[5:6])


@pytest.mark.parametrize(
    "step",
    [CSZScoreNorm(), CSRankNorm(), ProcessInf(), Winsorize(), DropnaLabel()],
    ids=lambda s: repr(s)[:30],
)
def test_a_processor_that_reads_whole_dates_refuses_a_matrix(step):
    frame = make_frame()
    step.fit(frame)
    assert not step.row_wise
    with pytest.raises(UsageError, match="transform a frame instead"):
        step.transform_array(np.zeros((1, 3)), FEATURES)


def test_a_matrix_without_a_fitted_column_is_refused_by_name():
    frame = make_frame()
    step = ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END).fit(frame)
    with pytest.raises(UsageError, match="lacks f3"):
        step.transform_array(np.zeros((1, 2)), ["f1", "f2"])
    with pytest.raises(NotFittedError):
        ZScoreNorm(fit_start=FIT_START, fit_end=FIT_END).transform_array(np.zeros((1, 1)), ["f1"])
    with pytest.raises(UsageError, match="no column 'f4'"):
        Fillna(fields=["f4"]).transform_array(np.zeros((1, 1)), ["f1"])
    with pytest.raises(UsageError, match="a matrix of 2 columns"):
        Pipeline([Fillna()]).transform_array(np.zeros((1, 3)), ["f1", "f2"])
    # in place: a matrix of another type, or read-only, would be changed wrongly or not at all
    with pytest.raises(UsageError, match="writable float64 matrix, not float32"):
        Fillna().transform_array(np.zeros((1, 1), np.float32), ["f1"])
    frozen = np.zeros((1, 1))
    frozen.flags.writeable = False
    with pytest.raises(UsageError, match="read-only"):
        Fillna().transform_array(frozen, ["f1"])


def test_a_winsorize_bound_learned_as_nan_clips_nothing_in_a_matrix_as_in_a_frame() -> None:
    # the 99th percentile of -inf, -inf, 1 falls between -inf and 1: NaN, which Polars' clip
    # ignores (a bound not learned at all, None, makes the column missing instead)
    days = [date(2021, 1, 4), date(2021, 1, 5), date(2021, 1, 6), date(2021, 1, 7)]
    frame = pl.DataFrame({
        "instrument": ["a", "b", "c", "d"], "date": days,
        "x": [-np.inf, -np.inf, 1.0, 5.0], "y": [1.0, 2.0, 3.0, 4.0],
    })  # fmt: skip
    step = Winsorize(by="fit", lower=0.01, upper=0.99, fit_start=days[0], fit_end=days[2])
    step.fit(frame)
    assert math.isnan(step.bounds_["x"][1])
    want = step.transform(frame).select("x", "y").to_numpy().astype(np.float64)
    got = step.transform_array(frame.select("x", "y").to_numpy().copy(), ["x", "y"])
    np.testing.assert_array_equal(got, want)
    assert got[3, 0] == 5.0  # not clipped, not missing
