"""Online/batch parity: minute bars replayed through a broker and the stream give every
Alpha158 feature that ``quarry features compute`` gives on the same bars."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.ipc as ipc
import pytest

from quarry.data._minute_bars import minute_bars
from quarry.features import alpha158, compute
from quarry.stream import Broker, StreamConfig, StreamRunner, replay
from tests.features.test_online import parity_failures
from tests.stream.conftest import BROKER_URLS, Subjects, drain, open_broker


@pytest.fixture(params=["nats", "redis"])
def real_broker(request: pytest.FixtureRequest, subjects: Subjects) -> Iterator[Broker]:
    yield from open_broker(request.param, subjects)


def test_alpha158_through_the_stream_equals_batch(
    real_broker: Broker, subjects: Subjects, tmp_path: Path
) -> None:
    # 500 instruments over three sessions: suspensions, single missing bars, listings and
    # stops during the period, and the overnight gaps.
    bars = minute_bars(500, sessions=3, minutes=40, seed=11)
    replay(real_broker, subjects.bars, bars)
    config = StreamConfig.model_validate(
        {"broker": BROKER_URLS[real_broker.kind], "features": "alpha158",
         "subjects": subjects.config(), "outputs": str(tmp_path / "out")}
    )  # fmt: skip
    health = StreamRunner(config, broker=real_broker).run(idle_exit=1.0)
    assert health.bars == bars["date"].n_unique()
    assert health.dead_letters == 0
    published = drain(real_broker, subjects.features, at_least=health.bars)
    tables = [ipc.open_stream(io.BytesIO(m.data)).read_all() for m in published]
    online = pl.concat(pl.DataFrame(t) for t in tables)
    assert online.height == bars.height
    features = alpha158()
    assert parity_failures(compute(bars, features), online, list(features)) == []
