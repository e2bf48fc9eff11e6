"""The embedding scorer's head: a ridge regression from a story's sentence embedding to the
return it leads, fitted walk-forward so that every score is out of sample.

Each story is embedded (``quarry.text.embedder``) and placed at the first bar it counts for
(the text fields' rule). Its label is the label a model of bars would get on that bar (by
default Qlib's, the return from the next close to the one after), less the day's
cross-sectional mean. The stories' bars are cut into test windows of ``step`` trading days
(``WalkForward``); the head scoring a window is fitted on the stories whose labels were known
before it (the label's purge gap left out), and scores every version delivered in it:
corrections too. A story before the first window has no head, and no score (empty).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from quarry._json import digest
from quarry.data import Store, read_bars
from quarry.exceptions import DataError, UsageError
from quarry.models._dataset import WalkForward, label_horizon

__all__ = ["HEAD_SCORER", "TextHead", "fit_text_head"]

HEAD_SCORER = "embed"
DEFAULT_LABEL = "Ref($close, -2) / Ref($close, -1) - 1"


@dataclass(frozen=True)
class TextHead:
    """What a walk-forward fit of the head produced: a score per story version (event_id,
    delivered_at, score), its version, and how it did out of sample."""

    scores: pl.DataFrame
    version: str
    windows: int
    stories: int
    trained_on: int
    # rank correlation of the out-of-sample scores with their stories' labels
    oos_rank_ic: float
    oos_stories: int


def fit_text_head(
    store: Store,
    *,
    as_of: datetime | str | None = None,
    step: int = 63,
    min_train_days: int = 252,
    alpha: float = 1.0,
    label: str = DEFAULT_LABEL,
    progress: Callable[[str], None] | None = None,
) -> TextHead:
    """Fit the head walk-forward and score every story version known at ``as_of``."""
    from quarry.data._events import event_versions
    from quarry.data._text_fields import story_bars
    from quarry.features import compute
    from quarry.features._compile import LABEL
    from quarry.text import embedder, text_of

    say = progress or (lambda message: None)
    if step < 1 or min_train_days < 1:
        raise UsageError("step and min_train_days are numbers of trading days, at least 1")
    if store.table("events") is None:
        raise DataError(
            f"{store.location}: the store has no stories to score; ingest some with "
            "`quarry data ingest events FILE`"
        )
    horizon = label_horizon(label)
    bars = read_bars(store, ["close"], as_of=as_of, adjust="adjusted")
    if bars.height == 0:
        raise DataError(f"{store.location}: no bars to measure the stories' returns on")
    labels = (
        compute(bars, {}, label=label)
        .rename({LABEL: "label"})
        .with_columns((pl.col("label") - pl.col("label").mean().over("date")).alias("label"))
    )
    every = event_versions(store, as_of)
    versions = every.filter(~pl.col("retracted"))
    # retractions too: a story retracted before its first bar never counted, so never trains
    placed = story_bars(every, bars.select("instrument", "date"))
    dates = bars["date"]
    placed = placed.with_columns(pl.Series("bar_date", dates.gather(placed["row"])))
    say(f"embedding {versions.height} story versions")
    model = embedder()
    # float64 for the fit: float32 sums round differently with the rows' order and count
    vectors = model.embed(text_of(versions["title"].to_list(), versions["body"].to_list()))
    vectors = vectors.astype(np.float64)
    index = versions.select("event_id", "delivered_at").with_row_index("vec")

    # training rows: a story at the first bar it counts for, per instrument it names
    train = (
        placed.filter(pl.col("first"))
        .join(index, on=["event_id", "delivered_at"])
        .join(labels.select("instrument", "date", "label"),
              left_on=["instrument", "bar_date"], right_on=["instrument", "date"])
        .filter(pl.col("label").is_finite())
        # a fixed order (joins keep none): the same stories fit the same head, bit for bit
        .sort("bar_date", "event_id", "instrument")
    )  # fmt: skip
    # a version is scored by the head of the window its (earliest) bar falls in
    when = placed.group_by("event_id", "delivered_at").agg(pl.col("bar_date").min())
    scored = index.join(when, on=["event_id", "delivered_at"], how="left")

    calendar = dates.unique().sort()
    if calendar.len() <= min_train_days + horizon:
        raise DataError(
            f"{store.location}: {calendar.len()} trading days, too few for a head that trains on "
            f"{min_train_days} days first; lower --min-train-days"
        )
    wf = WalkForward(
        start=calendar[min_train_days + horizon],
        end=calendar[-1],
        step=step,
        horizon=horizon,
    )
    windows = wf.windows(calendar.to_list())
    out = np.full(scored.height, np.nan)
    oos_scores: list[np.ndarray] = []
    oos_labels: list[np.ndarray] = []
    oos_days: list[np.ndarray] = []
    trained_on = 0
    from sklearn.linear_model import Ridge

    for k, w in enumerate(windows):
        fit = train.filter(pl.col("bar_date").is_between(*w.train))
        if fit.height < 20:
            continue
        x = vectors[fit["vec"].to_numpy()]
        y = fit["label"].to_numpy()
        head = Ridge(alpha=alpha).fit(x, y)
        spread = float(np.std(head.predict(x))) or 1.0
        trained_on = max(trained_on, fit.height)
        mine = scored.filter(pl.col("bar_date").is_between(*w.test))
        if mine.height:
            rows = mine["vec"].to_numpy()
            out[rows] = head.predict(vectors[rows]) / spread
        test = train.filter(pl.col("bar_date").is_between(*w.test))
        if test.height:
            oos_scores.append(head.predict(vectors[test["vec"].to_numpy()]))
            oos_labels.append(test["label"].to_numpy())
            oos_days.append(test["bar_date"].to_physical().to_numpy())
        say(f"window {k + 1}/{len(windows)}: fitted on {fit.height} stories")
    ic, n = _rank_ic(oos_scores, oos_labels, oos_days)
    version = "-".join(
        [
            HEAD_SCORER,
            model.version,
            digest({"label": label, "step": step, "min_train_days": min_train_days,
                    "alpha": alpha})[:12],
        ]
    )  # fmt: skip
    scores = scored.select("event_id", "delivered_at").with_columns(
        pl.Series("score", out).fill_nan(None)
    )
    return TextHead(scores, version, len(windows), versions.height, trained_on, ic, n)


def _rank_ic(
    scores: list[np.ndarray], labels: list[np.ndarray], days: list[np.ndarray]
) -> tuple[float, int]:
    """The mean over days of the rank correlation of out-of-sample scores with labels."""
    if not scores:
        return float("nan"), 0
    frame = pl.DataFrame(
        {"s": np.concatenate(scores), "y": np.concatenate(labels), "d": np.concatenate(days)}
    )
    daily = (
        frame.group_by("d")
        .agg(pl.corr(pl.col("s").rank(), pl.col("y").rank()).alias("ic"), pl.len())
        .filter((pl.col("len") >= 5) & pl.col("ic").is_finite())
    )
    mean = daily["ic"].mean() if daily.height else None
    return (float(mean) if isinstance(mean, float) else float("nan")), frame.height
