"""``quarry stream``: live features, scores, positions and orders from a message broker."""

from __future__ import annotations

import signal
import threading
from datetime import datetime
from typing import Annotated, Any

import typer

from quarry.cli._output import err, fail_cleanly, print_json
from quarry.exceptions import UsageError

app = typer.Typer(
    help="Live signals: bars from NATS JetStream, Redis Streams or in-process, through the "
    "research features and the champion model, to scores, target positions and paper orders.",
    no_args_is_help=True,
)


@app.command("run")
@fail_cleanly
def run_cmd(
    config: Annotated[str, typer.Option("--config", help="The stream's YAML config.")],
    max_bars: Annotated[
        int | None, typer.Option(help="Stop after this many bar times (default: run on).")
    ] = None,
    idle_exit: Annotated[
        float | None,
        typer.Option(help="Stop when no message came for this many seconds (default: wait)."),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus /metrics on this port of 127.0.0.1 (0: any free)."),
    ] = None,
    every: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 5.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the final health as JSON.")
    ] = False,
) -> None:
    """Run a stream: subscribe to bars with a durable consumer, update every feature of the
    model's set on each bar (research's own expressions and kernels), score with the model
    at its alias on the schedule, and publish scores, TopK-Dropout target positions and
    paper orders, each with its bar time and model version, also stored under outputs.

    Stopped (Ctrl-C, SIGTERM) or killed, it resumes on the next start after its last
    acknowledged bar: nothing is scored or published twice. Malformed or late messages go
    to the dead-letter subject with the reason.

    Example: quarry stream run --config examples/stream/live.yaml
    """
    from quarry.stream import StreamRunner, load_stream_config

    spec = load_stream_config(config)
    runner = StreamRunner(spec)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if metrics_port is not None:
        from quarry.stream import serve_metrics

        port = serve_metrics(runner.health, metrics_port)
        err.print(f"metrics on http://127.0.0.1:{port}/metrics", highlight=False)
    err.print(
        f"stream {spec.durable}: {spec.broker} {spec.subjects.bars} -> "
        f"{spec.subjects.scores}, {spec.subjects.positions}, {spec.subjects.orders}; "
        f"{len(runner.online.names)} features over {runner.online.depth} bars"
        + (f", model {spec.model}" if spec.model else ""),
        highlight=False,
    )

    def show(health: Any) -> None:
        err.print(health.line(), highlight=False)

    health = runner.run(max_bars=max_bars, idle_exit=idle_exit, stop=stop, progress=show,
                        every=every)  # fmt: skip
    if as_json:
        print_json(health.view())
    else:
        err.print(health.line(), highlight=False)
        if health.bars == 0 and health.redelivered == 0:
            err.print(
                f"note: no bar came on {spec.subjects.bars}; is a feed (or quarry stream "
                "replay) publishing there?",
                highlight=False,
            )


def _when(text: str | None, flag: str) -> datetime | None:
    from quarry.stream._snapshots import Malformed, as_time

    if text is None:
        return None
    try:
        return as_time(text)
    except Malformed:
        raise UsageError(f"{flag} {text!r}: give a date or time, e.g. 2024-01-02T14:30Z") from None


def _speed(text: str) -> float | None:
    t = text.strip().lower()
    if t == "max":
        return None
    try:
        value = float(t.removesuffix("x"))
    except ValueError:
        value = 0.0
    if value <= 0:
        raise UsageError(f"--speed {text!r}: give a pace such as 1x, 60x, or max")
    return value


@app.command("replay")
@fail_cleanly
def replay_cmd(
    broker: Annotated[
        str, typer.Option(help="nats://HOST:4222, redis://HOST:6379/0 (memory:// is in-process).")
    ] = "nats://127.0.0.1:4222",
    subject: Annotated[str, typer.Option(help="The subject (stream) to publish bars to.")] = (
        "quarry.bars"
    ),
    store: Annotated[
        str | None, typer.Option(help="A store whose bars to replay (as known at --as-of).")
    ] = None,
    bars: Annotated[
        str | None,
        typer.Option(help="Or a Parquet, Arrow or CSV file of bars (instrument, date, fields)."),
    ] = None,
    start: Annotated[str | None, typer.Option("--from", help="First bar time.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Last bar time.")] = None,
    speed: Annotated[
        str, typer.Option(help="Nx: N times the bars' own pace; max: as fast as possible.")
    ] = "max",
    rate: Annotated[
        float | None, typer.Option(help="Or a fixed number of snapshots a second.")
    ] = None,
    as_of: Annotated[str | None, typer.Option(help="Replay what the store knew then.")] = None,
    reset: Annotated[
        bool,
        typer.Option(
            help="Delete the subject's messages and consumers first (a demo or test that "
            "starts over); a live feed's subject is never reset."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Publish stored bars as snapshots, one Arrow IPC message per bar time, as a live feed
    batches them: for tests, demos and benchmarks.

    Example: quarry stream replay --store ./store --from 2024-01-02 --to 2024-03-29 --speed max
    """
    from dataclasses import asdict

    from quarry.stream import connect, read_bar_file, replay

    if (store is None) == (bars is None):
        raise UsageError("give --store STORE or --bars FILE (one of them)")
    t0, t1 = _when(start, "--from"), _when(end, "--to")
    pace = _speed(speed)
    if rate is not None and rate <= 0:
        raise UsageError(f"--rate {rate}: give a number of snapshots a second above 0")
    if bars is not None:
        frame = read_bar_file(bars)
    else:
        from quarry.data import Store, read_bars

        source = Store(store)  # type: ignore[arg-type]
        fields = ["open", "high", "low", "close", "volume", "vwap"]
        frame = read_bars(
            source, fields, start=t0.date() if t0 else None, end=t1.date() if t1 else None,
            as_of=as_of,
        )  # fmt: skip
    if frame.height == 0:
        raise UsageError("no bars in that range: nothing to replay")
    with connect(broker) as target:
        if reset:
            target.purge(subject)
        summary = replay(target, subject, frame, start=t0, end=t1, speed=pace, rate=rate)
    if summary.snapshots == 0:
        raise UsageError("no bars between --from and --to: nothing was published")
    if as_json:
        print_json(asdict(summary))
    else:
        err.print(
            f"published {summary.snapshots:,} snapshots ({summary.bars:,} bars) to {subject} "
            f"in {summary.seconds:.2f} s, {summary.first} .. {summary.last}",
            highlight=False,
        )
        if summary.duplicates:
            err.print(
                f"note: {summary.duplicates:,} of them were on {subject} already (published "
                "before under the same ids) and were dropped; --reset starts the subject over",
                highlight=False,
            )
