"""The stream's health on Prometheus /metrics, read from its ``Health`` at each scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from quarry.stream._runner import Health

__all__ = ["serve_metrics"]


class _Collector:
    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        h = self.health
        for name, doc, value in (
            ("quarry_stream_bars", "Bar times processed", h.bars),
            ("quarry_stream_scored", "Bar times scored", h.scored),
            ("quarry_stream_dead_letters", "Messages sent to the dead-letter subject",
             h.dead_letters),
            ("quarry_stream_redelivered", "Messages of bars already processed", h.redelivered),
        ):  # fmt: skip
            yield CounterMetricFamily(name, doc, value=value)
        view = h.view()
        for name, doc, key in (
            ("quarry_stream_bars_per_second", "Bar times a second since start", "bars_per_second"),
            ("quarry_stream_lag_p50_seconds", "Publication to outputs, median", "lag_p50_ms"),
            ("quarry_stream_lag_p99_seconds", "Publication to outputs, 99th pct", "lag_p99_ms"),
            ("quarry_stream_feature_update_seconds", "The last bar's feature update",
             "feature_ms"),
            ("quarry_stream_nan_rate", "Share of missing features in the last bar", "nan_rate"),
            ("quarry_stream_model_version", "The model version scoring", "model_version"),
        ):  # fmt: skip
            value = view[key]
            if value is None:
                continue
            scale = 1e-3 if key.endswith("_ms") else 1.0
            yield GaugeMetricFamily(name, doc, value=float(value) * scale)


def serve_metrics(health: Health, port: int = 0) -> int:
    """Serve /metrics on 127.0.0.1:``port`` (0: a free one) from a thread; the port."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(_Collector(health))
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as e:
        from quarry.exceptions import UsageError

        raise UsageError(f"--metrics-port {port}: {e.strerror or e}; give another port") from None
    return int(server.server_port)
