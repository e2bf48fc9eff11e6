"""The stream's config file: strict, every problem one line with its place and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from quarry.exceptions import UsageError
from quarry.stream import load_stream_config
from quarry.stream._config import Schedule


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "live.yaml"
    path.write_text(text)
    return path


def test_a_good_file_reads_with_outputs_beside_it(tmp_path: Path) -> None:
    config = load_stream_config(write(tmp_path, "broker: redis://127.0.0.1:6379/0\n"
                                                "features: alpha158\noutputs: out\n"))  # fmt: skip
    assert config.outputs == str(tmp_path / "out")
    assert config.subjects.bars == "quarry.bars"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("features: alpha158\nbrokr: nats://x\n", "brokr: unknown key (line 2)"),
        ("broker: nats://x\n", "give a model (NAME@ALIAS) or features"),
        ("features: alpha158\nschedule: sometimes\n", "schedule 'sometimes': write bar"),
        ("features: alpha158\nbroker: kafka://x\n", "start it with nats://, redis://"),
        ("features: alpha158\nstrategy: {topk: 0}\n", "strategy.topk: Input should be greater"),
        ("features: alpha158\nsubjects: {bars: 'a b'}\n", "subjects.bars: String should match"),
        ("features: {M5: Mean($close, 5)}\n", "features: give a feature set's name (alpha158)"),
        ("features: alpha158\ninstruments: 0\n", "instruments: Input should be greater than 0"),
    ],
)
def test_problems_name_their_place(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        load_stream_config(write(tmp_path, text))
    assert message in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "live.yaml"))


@pytest.mark.parametrize(
    ("text", "seconds", "at"),
    [("bar", None, ()), ("30s", 30.0, ()), ("5m", 300.0, ()), ("close 15:59", None, ("15:59",))],
)
def test_schedules(text: str, seconds: float | None, at: tuple[str, ...]) -> None:
    s = Schedule(text)
    assert s.seconds == seconds
    assert tuple(t.strftime("%H:%M") for t in s.at) == at


def test_the_example_configs_read() -> None:
    examples = sorted((Path(__file__).parents[2] / "examples" / "stream").glob("*.yaml"))
    assert examples
    for path in examples:
        config = load_stream_config(path)
        assert config.model or config.features
