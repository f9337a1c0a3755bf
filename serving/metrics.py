"""Serving metrics through Ray's metrics export: every replica reports, tagged with its deployment and
replica, and the Ray metrics agent of each node exposes them to Prometheus (port
``RAY_METRICS_EXPORT_PORT``, default 8080 in our manifests), so one scrape per node sees every replica.
Ray prefixes every name with ``ray_``.

Names follow Prometheus' conventions (``promtool check metrics``): durations in seconds, counters end in
``_total``. ``p13n_request_duration_seconds`` counts every answer, by endpoint and status — errors too —
from the first byte read to the response handed back (for ``/v1/chat/completions`` that includes the
upstream LLM's answer, or its first bytes when streaming).
"""

from __future__ import annotations

from ray.serve import metrics

from serving.responses import RewriteAnswer, ScoreAnswer

__all__ = ["ServingMetrics", "LATENCY_S"]

STAGE_SAMPLE = 10
LATENCY_S = [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.05, 0.075, 0.1, 0.15,
             0.25, 0.5, 1, 2.5, 5, 10, 30]  # fmt: skip


class ServingMetrics:
    """Created in each replica's constructor (never at import)."""

    def __init__(self) -> None:
        self.request_seconds = metrics.Histogram("p13n_request_duration_seconds", "Time to answer a request, by "
                                                 "endpoint and HTTP status", boundaries=LATENCY_S,
                                                 tag_keys=("endpoint", "status"))  # fmt: skip
        self.stage_seconds = metrics.Histogram("p13n_stage_duration_seconds", "Time of one request stage",
                                               boundaries=LATENCY_S, tag_keys=("endpoint", "stage"))  # fmt: skip
        self.degraded = metrics.Counter("p13n_degraded_total", "Answers that skipped a stage",
                                        tag_keys=("endpoint", "reason"))  # fmt: skip
        self.budget_misses = metrics.Counter("p13n_budget_miss_total", "Answers later than their budget",
                                             tag_keys=("endpoint",))  # fmt: skip
        self.redis_errors = metrics.Counter("p13n_redis_errors_total", "Requests whose Redis reads failed",
                                            tag_keys=("endpoint",))  # fmt: skip
        self._seen = 0  # answers observed, for sampling the stage histograms
        self.encoder_batch_size = metrics.Histogram("p13n_encoder_batch_size", "Texts per encoder batch",
                                                    boundaries=[1, 2, 4, 8, 16, 32, 64])  # fmt: skip

        self.published_messages = metrics.Counter("p13n_published_messages_total", "Conversation turns of "
                                                  "/v1/chat/completions sent to Kafka, by role and outcome "
                                                  "(produced, failed, dropped)", tag_keys=("role", "outcome"))  # fmt: skip

    def count_published(self, role: str, outcome: str) -> None:
        self.published_messages.inc(tags={"role": role, "outcome": outcome})

    def observe_encoder_batch(self, size: int) -> None:
        self.encoder_batch_size.observe(size)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        """One answered request, whatever its status."""
        self.request_seconds.observe(seconds, tags={"endpoint": endpoint, "status": str(status)})

    def observe_answer(self, endpoint: str, answer: ScoreAnswer | RewriteAnswer, budget_ms: float | None) -> None:
        """A personalized answer: budget misses and degraded reasons always; per-stage time for one answer in
        ``STAGE_SAMPLE`` (recording a Ray metric costs ~25 µs; an answer has up to five stages)."""
        timings = answer.timings_ms
        total = timings.get("total")
        if total is not None and budget_ms is not None and total > budget_ms:
            self.budget_misses.inc(tags={"endpoint": endpoint})
        self._seen += 1
        if self._seen % STAGE_SAMPLE == 1:  # the first answer too: every replica exports its stage series
            for stage, ms in timings.items():
                if stage != "total":
                    self.stage_seconds.observe(ms / 1000, tags={"endpoint": endpoint, "stage": stage})
        for reason in answer.degraded:
            self.degraded.inc(tags={"endpoint": endpoint, "reason": reason})
            if reason == "redis_unavailable":
                self.redis_errors.inc(tags={"endpoint": endpoint})
