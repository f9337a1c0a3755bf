"""Serving metrics through Ray's metrics export: every replica reports, tagged with its deployment and
replica, and the Ray metrics agent of each node exposes them to Prometheus (port
``RAY_METRICS_EXPORT_PORT``, default 8080 in our manifests), so one scrape per node sees every replica.
"""

from __future__ import annotations

from ray.serve import metrics

__all__ = ["ServingMetrics"]

STAGE_SAMPLE = 10
LATENCY_MS = [0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 25, 30, 50, 75, 100, 150, 250, 500, 1000]


class ServingMetrics:
    """Created in each replica's constructor (never at import)."""

    def __init__(self) -> None:
        self.request_ms = metrics.Histogram("p13n_request_latency_ms", "Request latency by endpoint",
                                            boundaries=LATENCY_MS, tag_keys=("endpoint", "status"))  # fmt: skip
        self.stage_ms = metrics.Histogram("p13n_stage_latency_ms", "Latency of a request stage",
                                          boundaries=LATENCY_MS, tag_keys=("endpoint", "stage"))  # fmt: skip
        self.degraded = metrics.Counter("p13n_degraded_total", "Answers that skipped a stage",
                                        tag_keys=("endpoint", "reason"))  # fmt: skip
        self.budget_misses = metrics.Counter("p13n_budget_miss_total", "Answers later than their budget",
                                             tag_keys=("endpoint",))  # fmt: skip
        self.redis_errors = metrics.Counter("p13n_redis_errors_total", "Requests whose Redis reads failed",
                                            tag_keys=("endpoint",))  # fmt: skip
        self._seen = 0  # requests observed, for sampling the stage histograms
        self.encoder_batch_size = metrics.Histogram("p13n_encoder_batch_size", "Texts per encoder batch",
                                                    boundaries=[1, 2, 4, 8, 16, 32, 64])  # fmt: skip

    def observe_encoder_batch(self, size: int) -> None:
        self.encoder_batch_size.observe(size)

    def observe(self, endpoint: str, status: int, answer: dict | None, budget_ms: float | None) -> None:
        """Request latency, budget misses and degraded reasons always; per-stage latency for one request in
        ``STAGE_SAMPLE`` (recording a Ray metric costs ~25 µs; a request has up to five stages)."""
        timings = (answer or {}).get("timings_ms", {})
        total = timings.get("total")
        if total is not None:
            self.request_ms.observe(total, tags={"endpoint": endpoint, "status": str(status)})
            if budget_ms is not None and total > budget_ms:
                self.budget_misses.inc(tags={"endpoint": endpoint})
        self._seen += 1
        if self._seen % STAGE_SAMPLE == 0:
            for stage, ms in timings.items():
                if stage != "total":
                    self.stage_ms.observe(ms, tags={"endpoint": endpoint, "stage": stage})
        for reason in (answer or {}).get("degraded", []):
            self.degraded.inc(tags={"endpoint": endpoint, "reason": reason})
            if reason == "redis_unavailable":
                self.redis_errors.inc(tags={"endpoint": endpoint})
