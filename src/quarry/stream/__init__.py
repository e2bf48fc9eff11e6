"""Live signals: bars from a message broker through research's features and the champion
model to scores, target positions and paper orders (``quarry stream``).

Brokers (NATS JetStream, Redis Streams, in-process) sit behind ``_brokers``; messages are
read and checked by ``_snapshots``; ``_runner`` is the loop, with its outputs and restart
state in ``_outputs``; ``_replay`` publishes stored bars as a feed would. Names are imported
on first use.
"""

from typing import TYPE_CHECKING

from quarry._lazy import exports

if TYPE_CHECKING:
    from quarry.stream._brokers import BROKERS, Broker, BrokerError, Message, connect
    from quarry.stream._config import StreamConfig, load_stream_config
    from quarry.stream._metrics import serve_metrics
    from quarry.stream._outputs import OutputStore
    from quarry.stream._replay import read_bar_file, replay
    from quarry.stream._runner import Health, StreamRunner
    from quarry.stream._snapshots import Malformed, decode, encode

_MODULES = {
    "_brokers": "BROKERS Broker BrokerError Message connect",
    "_config": "StreamConfig load_stream_config",
    "_metrics": "serve_metrics",
    "_outputs": "OutputStore",
    "_replay": "read_bar_file replay",
    "_runner": "Health StreamRunner",
    "_snapshots": "Malformed decode encode",
}

__all__ = [
    "BROKERS",
    "Broker",
    "BrokerError",
    "Health",
    "Malformed",
    "Message",
    "OutputStore",
    "StreamConfig",
    "StreamRunner",
    "connect",
    "decode",
    "encode",
    "load_stream_config",
    "read_bar_file",
    "replay",
    "serve_metrics",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, _MODULES)
