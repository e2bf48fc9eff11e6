"""``quarry stream replay`` and ``quarry stream run`` as a user runs them."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from quarry.data._minute_bars import minute_bars
from quarry.stream import connect
from quarry.stream._metrics import serve_metrics
from quarry.stream._runner import Health
from tests.cli.helpers import parse_json, run

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"cli{uuid.uuid4().hex[:10]}"
    yield name
    with connect(REDIS) as broker:
        for part in ("bars", "scores", "positions", "orders", "features", "dead"):
            broker.purge(f"{name}.{part}")


def config(tmp_path: Path, prefix: str, extra: str = 'features: {M5: "Mean($close, 5)"}\n') -> Path:
    path = tmp_path / "live.yaml"
    path.write_text(
        f"broker: {REDIS}\ndurable: cli\n{extra}outputs: out\n"
        f"subjects: {{bars: {prefix}.bars, features: {prefix}.features, scores: {prefix}.scores, "
        f"positions: {prefix}.positions, orders: {prefix}.orders, dead_letter: {prefix}.dead}}\n"
    )
    return path


def test_replay_a_file_then_run_the_stream_over_it(tmp_path: Path, prefix: str) -> None:
    bars = minute_bars(12, sessions=2, minutes=15)
    bars.write_parquet(tmp_path / "bars.parquet")
    code, out, err = run("stream", "replay", "--broker", REDIS, "--subject", f"{prefix}.bars",
                         "--bars", str(tmp_path / "bars.parquet"), "--reset", "--json")  # fmt: skip
    assert code == 0, err
    summary = parse_json(out)
    assert (summary["snapshots"], summary["bars"]) == (30, bars.height)
    code, out, err = run("stream", "run", "--config", str(config(tmp_path, prefix)),
                         "--idle-exit", "1", "--json")  # fmt: skip
    assert code == 0, err
    health = parse_json(out)
    assert (health["bars"], health["dead_letters"], health["scored"]) == (30, 0, 0)
    assert health["last_bar"] == bars["date"].max().isoformat()  # type: ignore[union-attr]
    assert "features over 9 bars" in err  # Mean of 5: a running sum reads 2 x 5 - 1 bars


def test_a_bad_config_is_one_line_naming_key_and_line(tmp_path: Path, prefix: str) -> None:
    path = config(tmp_path, prefix, extra="features: alpha158\nschedul: bar\n")
    code, _, err = run("stream", "run", "--config", str(path))
    assert code == 1
    assert err.strip() == f"error: {path}: schedul: unknown key (line 4)"


def test_a_model_that_is_not_registered_is_named(
    tmp_path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUARRY_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, _, err = run("stream", "run", "--config",
                       str(config(tmp_path, prefix, extra="model: ghost@champion\n")))  # fmt: skip
    assert code == 1
    assert "no model is registered" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speed", "fast"], "--speed 'fast': give a pace such as 1x, 60x, or max"),
        (["--rate", "0"], "--rate 0.0: give a number of snapshots a second above 0"),
        (["--from", "2024-13-01"], "--from '2024-13-01': give a date or time"),
        ([], "give --store STORE or --bars FILE"),
    ],
)
def test_replay_refuses_bad_options_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "bars.parquet"
    minute_bars(2, sessions=1, minutes=3).write_parquet(path)
    source = [] if not args else ["--bars", str(path)]
    code, _, err = run("stream", "replay", "--broker", REDIS, *source, *args)
    assert code == 1
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_metrics_show_the_health_as_it_is() -> None:
    health = Health(bars=7, scored=5, dead_letters=2, model="m", model_version=3, nan_rate=0.25)
    port = serve_metrics(health, 0)
    health.bars = 9  # read at each scrape, not when started
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "quarry_stream_bars_total 9.0" in body
    assert "quarry_stream_dead_letters_total 2.0" in body
    assert "quarry_stream_model_version 3.0" in body
    assert "quarry_stream_nan_rate 0.25" in body


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_features_compute_keeps_the_times_of_intraday_bars(tmp_path: Path, suffix: str) -> None:
    from quarry.features import alpha158, compute

    bars = minute_bars(15, sessions=2, minutes=40, seed=4)
    path = tmp_path / f"bars.{suffix}"
    bars.write_csv(path) if suffix == "csv" else bars.write_parquet(path)
    code, _, err = run("features", "compute", "--bars", str(path), "--set", "alpha158",
                       "--out", str(tmp_path / "f.parquet"))  # fmt: skip
    assert code == 0, err
    got = pl.read_parquet(tmp_path / "f.parquet").sort("instrument", "date")
    assert got.schema["date"] == pl.Datetime("us", "UTC")
    # what the stream computes bar by bar (the same engine), as the command stores it
    expected = compute(bars, alpha158()).sort("instrument", "date")
    names = list(alpha158())
    assert got.select("instrument", "date").equals(expected.select("instrument", "date"))
    assert got.select(names).equals(expected.select(pl.col(names).cast(pl.Float32)))
