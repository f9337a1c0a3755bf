"""Prometheus metrics of a consumer process, and its /metrics, /healthz and /readyz endpoint.

Each process gets its own registry (no global state, so tests and several
consumers in one process do not collide).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["ConsumerMetrics", "HealthServer"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FRESHNESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400)


class ConsumerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("p13n_consumer_events", "Events by outcome", ["outcome"], registry=r)
        self.dead_letters = Counter("p13n_consumer_dead_letters", "Records sent to the DLQ", ["topic", "reason"], registry=r)
        self.items = Counter("p13n_consumer_items_embedded", "Items embedded", registry=r)
        self.conflicts = Counter("p13n_consumer_write_conflicts", "User writes retried after a concurrent change", registry=r)
        self.retries = Counter("p13n_consumer_retries", "Batches retried after a dependency failed", ["dependency"], registry=r)
        self.batch_size = Histogram("p13n_consumer_batch_size", "Records per batch",
                                    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000), registry=r)  # fmt: skip
        self.stage_seconds = Histogram("p13n_consumer_stage_seconds", "Time per processing stage", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)  # fmt: skip
        self.freshness = Histogram("p13n_consumer_freshness_seconds", "now - event time when the event was applied",
                                   buckets=FRESHNESS_BUCKETS, registry=r)  # fmt: skip
        self.lag = Gauge("p13n_consumer_lag", "Records behind the end of the partition", ["topic", "partition"], registry=r)
        self.rebalances = Counter("p13n_consumer_rebalances", "Partition assignments and revocations of this member",
                                  ["event"], registry=r)  # fmt: skip
        self.ready = Gauge("p13n_consumer_ready", "1 when Redis and Kafka answer", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves /metrics, /healthz (the loop is alive) and /readyz (dependencies answer) on a thread."""

    def __init__(self, metrics: ConsumerMetrics, port: int, host: str = "0.0.0.0") -> None:
        self.metrics = metrics
        self.alive = True
        self.is_ready = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path.startswith("/metrics"):
                    self._send(200, owner.metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/healthz"):
                    self._send(200 if owner.alive else 503, b"ok\n" if owner.alive else b"stopped\n")
                elif self.path.startswith("/readyz"):
                    self._send(200 if owner.is_ready else 503, b"ready\n" if owner.is_ready else b"not ready\n")
                else:
                    self._send(404, b"not found\n")

            def _send(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence per-request logs
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name="p13n-health", daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def set_ready(self, ready: bool) -> None:
        self.is_ready = ready
        self.metrics.ready.set(1 if ready else 0)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
