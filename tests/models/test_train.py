"""Training end to end: a planted alpha is recovered and pure noise is not; segments that
leak are refused; results are deterministic and tracked in MLflow."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from quarry.exceptions import LookaheadError, UsageError
from quarry.features import compute
from quarry.models import Segments, train
from tests.models.helpers import SEGMENTS, feature_frame


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.mark.slow
def test_lightgbm_recovers_a_planted_alpha_and_finds_none_in_noise(
    tmp_path: Path, tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", tracking)
    planted = train(feature_frame(tmp_path, 0.08, 1), SEGMENTS, out=tmp_path / "planted")
    noise = train(
        feature_frame(tmp_path, 0.0, 2), SEGMENTS, out=tmp_path / "noise", experiment=None
    )

    test = planted.metrics["test"]
    # ~250 test days: a daily Rank IC of noise has a mean within about 0.01 of zero.
    assert test["rank_ic"] > 0.03 and test["rank_ic_t"] > 4, test
    # On noise the model finds nothing: a small Rank IC, or none at all when early stopping
    # keeps no split and every score is the same (an undefined IC).
    nothing = noise.metrics["test"]
    assert np.isnan(nothing["rank_ic"]) or abs(nothing["rank_ic"]) < 0.015, nothing
    assert np.isnan(nothing["rank_ic"]) or abs(nothing["rank_ic_t"]) < 3, nothing

    written = json.loads((tmp_path / "planted" / "metrics.json").read_text())
    assert set(written) == {"train", "valid", "test"}
    for segment in written.values():
        assert {"ic", "icir", "rank_ic", "rank_icir"} <= set(segment)
    predictions = pl.read_parquet(tmp_path / "planted" / "predictions.parquet")
    assert predictions.columns == ["instrument", "date", "score"]
    assert predictions["date"].min() >= date(2017, 1, 5)


def test_metrics_are_the_daily_correlations_of_score_and_label(tmp_path: Path) -> None:
    frame = feature_frame(tmp_path, 0.08, 3)
    result = train(frame, SEGMENTS, model="linear", out=tmp_path / "lin", experiment=None)
    scored = result.predictions.join(
        frame.select("instrument", "date", "LABEL0"), on=["instrument", "date"]
    )
    pearson, spearman = [], []
    for _, day in scored.drop_nulls().group_by("date"):
        if day.height > 2:
            pearson.append(stats.pearsonr(day["score"], day["LABEL0"])[0])
            spearman.append(stats.spearmanr(day["score"], day["LABEL0"])[0])
    assert result.metrics["test"]["ic"] == pytest.approx(np.mean(pearson), abs=1e-9)
    assert result.metrics["test"]["rank_ic"] == pytest.approx(np.mean(spearman), abs=1e-9)
    icir = np.mean(spearman) / np.std(spearman, ddof=1)
    assert result.metrics["test"]["rank_icir"] == pytest.approx(icir, rel=1e-6)


def test_the_same_seed_gives_the_same_model(tmp_path: Path) -> None:
    frame = feature_frame(tmp_path, 0.05, 4)
    params = {"num_boost_round": 40}
    a = train(frame, SEGMENTS, params=params, seed=7, experiment=None)
    b = train(frame, SEGMENTS, params=params, seed=7, experiment=None)
    assert a.predictions.equals(b.predictions)


def test_a_training_window_overlapping_the_labels_that_follow_is_refused(tmp_path: Path) -> None:
    frame = feature_frame(tmp_path, 0.0, 5)
    leaky = Segments.parse(
        {
            "train": "2015-01-02:2016-06-30",
            "valid": "2016-07-01:2016-12-30",  # the next trading day: labels overlap
            "test": "2017-01-05:2017-12-29",
        }
    )
    with pytest.raises(LookaheadError):
        train(frame, leaky, experiment=None)


def test_a_feature_built_from_the_label_is_refused_before_training() -> None:
    with pytest.raises(LookaheadError, match="into the future"):
        compute(
            pl.DataFrame({"instrument": ["A"], "date": [date(2020, 1, 2)], "close": [1.0]}),
            {"LEAK": "Ref($close, -2)/Ref($close, -1) - 1"},
        )


def test_unknown_model_names_the_closest(tmp_path: Path) -> None:
    frame = feature_frame(tmp_path, 0.0, 6)
    with pytest.raises(UsageError, match="did you mean lightgbm"):
        train(frame, SEGMENTS, model="lightgmb", experiment=None)


def test_walk_forward_predicts_every_test_day_out_of_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quarry.models import WalkForward, train_walk_forward

    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    frame = feature_frame(tmp_path, 0.08, 12)
    schedule = WalkForward(
        start=date(2017, 1, 2), end=date(2017, 6, 30), step=40, horizon=2,
        train_days=300, valid_days=60,
    )  # fmt: skip
    result = train_walk_forward(
        frame, schedule, params={"num_boost_round": 60}, out=tmp_path / "wf"
    )
    calendar = frame["date"].unique().sort().to_list()
    windows = schedule.windows(calendar)
    assert len(windows) == 4  # ~124 trading days in steps of 40
    test_days = {d for d in calendar if date(2017, 1, 2) <= d <= date(2017, 6, 30)}
    assert set(result.predictions["date"].unique().to_list()) == test_days
    assert result.predictions.select("instrument", "date").is_duplicated().sum() == 0
    for window in windows:  # each fit ends a purge gap before the days it predicts
        assert window.train[1] < window.test[0] and window.valid is not None
        gap = [d for d in calendar if window.valid[1] < d < window.test[0]]
        assert len(gap) >= schedule.horizon
    # The out-of-sample metrics are those of the concatenated predictions.
    scored = result.predictions.join(frame.select("instrument", "date", "LABEL0"),
                                     on=["instrument", "date"])  # fmt: skip
    spearman = [
        stats.spearmanr(day["score"], day["LABEL0"])[0]
        for _, day in scored.drop_nulls().group_by("date")
        if day.height > 2
    ]
    assert result.metrics["test"]["rank_ic"] == pytest.approx(np.mean(spearman), abs=1e-9)
    assert result.metrics["test"]["rank_ic"] > 0.02
    assert result.run_id is not None


def test_the_mlp_learns_the_planted_alpha_and_is_deterministic(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the mlp extra (quarry[mlp]) is not installed")
    frame = feature_frame(tmp_path, 0.08, 13)
    params = {"hidden": [32], "max_epochs": 15, "patience": 3}
    a = train(frame, SEGMENTS, model="mlp", params=params, seed=3)  # logged to MLflow too
    b = train(frame, SEGMENTS, model="mlp", params=params, seed=3, experiment=None)
    assert a.predictions.equals(b.predictions)
    assert a.run_id is not None
    assert a.metrics["test"]["rank_ic"] > 0.02, a.metrics["test"]


def test_progress_reports_each_boosting_round(tmp_path: Path) -> None:
    frame = feature_frame(tmp_path, 0.05, 14)
    messages: list[str] = []
    result = train(
        frame, SEGMENTS, params={"num_boost_round": 15, "early_stopping_rounds": 100},
        experiment=None, progress=messages.append,
    )  # fmt: skip
    rounds = [m for m in messages if m.startswith("boosting round")]
    assert [m.split(":")[0] for m in rounds] == [f"boosting round {i}/15" for i in range(1, 16)]
    assert result.predictions.height > 0
    # progress=True draws a status line instead; it must not change the result
    again = train(frame, SEGMENTS, params={"num_boost_round": 15, "early_stopping_rounds": 100},
                  experiment=None, progress=True)  # fmt: skip
    assert again.predictions.equals(result.predictions)


def _flat_features(kind: str) -> pl.DataFrame:
    """40 instruments over 2015-2017 with a random label and one feature that is constant
    ("constant"), the same for every instrument on a day ("daily"), or the label plus noise
    ("signal")."""
    rng = np.random.default_rng(21)
    days = pl.date_range(date(2015, 1, 1), date(2017, 12, 31), "1d", eager=True)
    days = days.filter(days.dt.weekday() <= 5)
    frame = pl.DataFrame(
        {
            "instrument": np.repeat([f"I{i:02d}" for i in range(40)], len(days)),
            "date": pl.concat([days] * 40),
        }
    ).with_columns(LABEL0=pl.Series(rng.normal(0, 0.02, 40 * len(days))))
    if kind == "constant":
        return frame.with_columns(F1=pl.lit(1.0))
    if kind == "daily":
        return frame.with_columns(F1=pl.col("date").dt.ordinal_day().cast(pl.Float64))
    return frame.with_columns(F1=pl.col("LABEL0") + rng.normal(0, 0.02, frame.height))


@pytest.mark.parametrize(("model", "kind"), [("lightgbm", "constant"), ("linear", "constant"),
                                             ("linear", "daily")])  # fmt: skip
def test_a_model_that_learned_nothing_says_so(tmp_path: Path, model: str, kind: str) -> None:
    result = train(_flat_features(kind), SEGMENTS, model=model, out=tmp_path, experiment=None)
    assert result.constant
    assert len(result.warnings) == 1 and "learned nothing" in result.warnings[0]
    for name in ("train", "valid", "test"):
        assert result.metrics[name]["constant"] is True
        assert np.isnan(result.metrics[name]["ic"])  # undefined, not a number that misleads
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test"]["constant"] is True and written["test"]["ic"] is None


def test_a_model_that_ranks_instruments_is_not_flagged(tmp_path: Path) -> None:
    result = train(_flat_features("signal"), SEGMENTS, model="linear", experiment=None)
    assert not result.constant and result.warnings == ()
    assert result.metrics["test"]["constant"] is False
    assert result.metrics["test"]["ic"] > 0.5  # the feature is the label plus as much noise


def test_the_mlp_reports_each_epoch_and_its_best(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the mlp extra (quarry[mlp]) is not installed")
    import pickle
    import re

    from quarry.models._mlp import MLPModel

    def epochs(messages: list[str], total: int) -> list[tuple[int, float, float, int]]:
        """(epoch, loss, best, best's epoch) of each epoch's message, checked against the
        losses reported so far: the best is the lowest of them, at an epoch that had it."""
        line = re.compile(
            rf"epoch (\d+)/{total}: valid loss (\d+\.\d{{3}}), best (\d+\.\d{{3}}) at epoch (\d+)"
        )
        found = [m.groups() for m in map(line.fullmatch, messages) if m is not None]
        parsed = [(int(e), float(loss), float(best), int(at)) for e, loss, best, at in found]
        losses = [loss for _, loss, _, _ in parsed]
        for k, (_, _, best, at) in enumerate(parsed):
            assert best == min(losses[: k + 1]), messages
            assert at <= k + 1 and losses[at - 1] == best, messages
        return parsed

    messages: list[str] = []
    params = {"hidden": [16], "max_epochs": 3, "patience": 10}
    train(feature_frame(tmp_path, 0.08, 15), SEGMENTS, model="mlp", params=params,
          experiment=None, progress=messages.append)  # fmt: skip
    assert [e for e, _, _, _ in epochs(messages, 3)] == [1, 2, 3], messages

    # the weights kept are the best epoch's: their validation loss is the one reported
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 5))
    y = x @ np.array([0.5, -0.3, 0.2, 0.0, 0.1]) + rng.normal(0, 1.0, 600)
    said: list[str] = []
    model = MLPModel({"hidden": [8], "max_epochs": 6, "patience": 10, "lr": 0.05}, seed=1)
    model.on_progress = said.append
    model.fit(x[:400], y[:400], x[400:], y[400:])
    reported = epochs(said, 6)
    assert len(reported) == 6 == len(said)
    kept = float(np.mean((model.predict(x[400:]) - y[400:]) ** 2))
    assert kept == pytest.approx(reported[-1][2], abs=6e-4)
    # the callback belongs to the session: a pickled model leaves it behind
    model.on_progress = lambda text: None
    assert pickle.loads(pickle.dumps(model)).on_progress is None  # noqa: S301 (our own bytes)
