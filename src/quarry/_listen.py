"""An ASGI app on a port, run by uvicorn in a thread, until SIGTERM or SIGINT.

Both servers (the job service's ``quarry server start`` and ``quarry serve``) run this way.
uvicorn is kept off the main thread on purpose: there it takes SIGTERM and SIGINT for itself
and raises them, and a server stopped that way would leave its workers and loops unstopped.
Here the main thread takes the signals, tells the caller (``on_stop``: stop admitting work),
then asks uvicorn to finish the requests in flight and waits for it.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from quarry.exceptions import UsageError

__all__ = ["Listening", "listening"]


class Listening:
    """A server listening: ``wait`` until a signal (or the server's own end)."""

    def __init__(self, thread: threading.Thread) -> None:
        self.thread = thread
        self.stopping = threading.Event()
        self.signalled: list[str] = []
        self.began = time.monotonic()

    def wait(self) -> None:
        """Return at SIGTERM or SIGINT, or when uvicorn has stopped by itself."""
        while not self.stopping.wait(0.5) and self.thread.is_alive():
            pass

    @property
    def by(self) -> str:
        """`` by SIGTERM`` (the signal that stopped it), or nothing: for the stop's log line."""
        return f" by {self.signalled[0]}" if self.signalled else ""

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.began


@contextmanager
def listening(
    app: Any,
    *,
    host: str,
    port: int,
    name: str = "api",
    on_stop: Callable[[], None] = lambda: None,
    then: Callable[[], None] = lambda: None,
) -> Iterator[Listening]:
    """Run ``app`` on ``host:port`` for the body of the ``with``; a port that cannot be
    listened on is a one-line UsageError. On leaving (a signal, or an error in the body,
    or that UsageError), ``on_stop`` runs, then uvicorn finishes, then ``then`` (the rest of
    the server's shutdown: a second signal meanwhile is taken, not a kill), and only then
    the previous signal handlers come back."""
    import uvicorn

    api = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=api.run, name=name)
    server = Listening(thread)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        server.signalled.append(signal.Signals(signum).name)
        server.stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    # What the start made (libraries, loaded models: some 400,000 objects) lives as long as
    # the server: frozen, a collection never walks it again; one that did held every request
    # for some 200 ms. And a background thread's Python work (the alias watcher's registry
    # reads, ~10 ms) gives the requests' thread its turn every millisecond, not every 5.
    gc.collect()  # what is garbage already is not frozen with the rest
    gc.freeze()
    switch = sys.getswitchinterval()
    sys.setswitchinterval(min(switch, 0.001))
    try:
        thread.start()
        while not api.started and thread.is_alive():
            time.sleep(0.05)
        if not api.started:  # it could not listen (the port is taken ...)
            raise UsageError(f"--port {port}: cannot listen on {host}:{port}; is another "
                             "server using it? Give another --port")  # fmt: skip
        yield server
    finally:
        on_stop()
        api.should_exit = True
        if thread.is_alive():
            thread.join()
        try:
            then()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            sys.setswitchinterval(switch)
            gc.unfreeze()
