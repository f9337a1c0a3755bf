"""``p13n consume``: a consumer-group member that folds events into Redis with an exactly-once effect.

Loop: poll a batch → :class:`~stream.processing.BatchProcessor` (validate, dead
letters as values, embed first-seen items, fold, atomic writes) → dead letters
to the DLQ topic (flushed) → commit offsets. Offsets are committed only after
Redis and the DLQ acknowledged, so a crash at any instant re-delivers the batch
and the idempotent writes make the replay a no-op where it was already applied.

The next poll is submitted (folded, its writes sent) before the previous one is
settled: Redis applies one poll while the next one folds, on one connection, so
in order. Failures of Redis or Kafka are retried with capped exponential backoff
and jitter: the unsettled polls are forgotten, their partitions rewound to their
first offsets, nothing is committed, and /readyz answers "not ready" until a
batch succeeds again. A rebalance inside a poll may re-deliver the unsettled
poll's records (positions restart at the committed offsets): they are skipped
like any re-delivery, since the processor counts what it sent as applied.
SIGTERM stops the loop after the current batch; a batch that outlives the grace
period is abandoned uncommitted (its effects are idempotent).

A rebalance can take partitions away at any poll, so error and retry paths (rewinds,
commits) only touch partitions still assigned. Work between two polls is bounded by
``kafka.max_poll_interval_ms``: embedding (the slow part of a bulk catalog) runs in
chunks, and between chunks the loop pauses its partitions and polls — which returns
nothing while they are paused but tells the group this member is alive (with
kafka-python >= 2.1 heartbeats run on a thread, but the poll interval is enforced
between poll() calls) — then resumes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from p13n.config import Config
from stream.backoff import Backoff
from stream.crash import NEVER, CrashPoints
from stream.metrics import ConsumerMetrics, HealthServer
from stream.processing import BatchOutcome, BatchProcessor, DeadLetter, Record, Submitted
from stream.runtime import folding_process

__all__ = ["ConsumerLoop", "dead_letter_headers"]

log = logging.getLogger("p13n.consume")


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """Headers of a DLQ record: why it failed and where it came from.

    >>> letter = DeadLetter(Record("p13n.events", 2, 41, b"k", b"{"), "invalid_json", "JSON is malformed")
    >>> dict(dead_letter_headers(letter))["p13n-reason"]
    b'invalid_json'
    """
    return [
        ("p13n-reason", letter.reason.encode()),
        ("p13n-detail", letter.detail[:1000].encode()),
        ("p13n-source-topic", letter.record.topic.encode()),
        ("p13n-source-partition", str(letter.record.partition).encode()),
        ("p13n-source-offset", str(letter.record.offset).encode()),
    ]


@dataclass
class _Polled:
    """A poll on its way: its records, its submitted events and its applied catalog records."""

    polled: dict
    submitted: Submitted | None = None
    done: list[BatchOutcome] = field(default_factory=list)


@dataclass
class LoopStats:
    batches: int = 0
    applied: int = 0
    dead_letters: int = 0


class ConsumerLoop:
    """One consumer-group member. Build it, then call :meth:`run` (blocks until ``stop`` is set)."""

    def __init__(
        self,
        config: Config,
        processor: BatchProcessor,
        *,
        metrics: ConsumerMetrics | None = None,
        health: HealthServer | None = None,
        stop: threading.Event | None = None,
        sleep: Callable[[float], bool] | None = None,
        crash: CrashPoints = NEVER,
    ) -> None:
        """``crash`` arms a crash point of the loop (:mod:`stream.crash`; none by default)."""
        self.config = config
        self.crash = crash
        self.processor = processor
        self.metrics = metrics or ConsumerMetrics()
        self.health = health
        self.stop = stop or threading.Event()
        self.sleep = sleep or self.stop.wait  # returns early when stopping
        self.backoff = Backoff(config.consumer.backoff_initial_ms / 1000, config.consumer.backoff_max_ms / 1000)
        self.stats = LoopStats()
        self._last_poll = time.monotonic()

    def _set_ready(self, ready: bool) -> None:
        if self.health is not None:
            self.health.set_ready(ready)
        else:
            self.metrics.ready.set(1 if ready else 0)

    def _kafka_consumer(self):
        from kafka import KafkaConsumer

        k = self.config.kafka
        consumer = KafkaConsumer(
            bootstrap_servers=k.bootstrap.split(","),
            group_id=k.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.config.consumer.max_batch,
            session_timeout_ms=k.session_timeout_ms,
            heartbeat_interval_ms=k.heartbeat_interval_ms,
            max_poll_interval_ms=k.max_poll_interval_ms,
            client_id=f"p13n-consumer-{k.group_id}",
        )
        consumer.subscribe([k.events_topic, k.items_topic], listener=_rebalance_counter(self.metrics))
        return consumer

    def _producer(self):
        from p13n.kafka_client import make_producer

        return make_producer(self.config.kafka)

    def run(self) -> LoopStats:
        """Consume until ``stop`` is set; returns what was done.

        Each poll's writes are submitted before the previous poll is settled, so Redis applies one
        while the next one folds; a poll is committed once Redis (and the DLQ) acknowledged it."""
        from kafka.errors import CommitFailedError, KafkaError

        from redis.exceptions import ResponseError

        from p13n.connections import REDIS_UNAVAILABLE

        consumer = self._connect(lambda: self._kafka_consumer())
        producer = self._connect(lambda: self._producer())
        if consumer is None or producer is None:
            return self.stats
        waiting: _Polled | None = None
        chunked = getattr(self.processor.encode, "between_chunks", None) is not None
        if chunked:
            self.processor.encode.between_chunks = lambda: self._keep_alive(consumer)
        try:
            while not self.stop.is_set():
                # Not poll(0) while a poll is unsettled: that raised end-to-end freshness p50 13 -> 42 ms and
                # p90 24 -> 224 ms at 1000 events/s on the embedded broker (poll returns at once when records wait).
                polled = consumer.poll(timeout_ms=200)
                self._last_poll = time.monotonic()
                current = None
                try:
                    current = self._submit(polled) if polled else None
                    if waiting is not None:
                        self._finish(waiting, consumer, producer)
                    elif not polled:
                        self._report_lag(consumer)
                except CommitFailedError as exc:  # group rebalanced under us: the new owner re-applies idempotently
                    log.warning("commit failed after a rebalance, batch left to the new owner: %s", exc)
                except (*REDIS_UNAVAILABLE, ResponseError) as exc:  # a cluster's CLUSTERDOWN and TRYAGAIN;
                    # refusals outside the script calls too (e.g. out of memory on a catalog write): retried, never fatal
                    self._retry(consumer, [waiting, current, _Polled(polled)], "redis", exc)
                    current = None
                except KafkaError as exc:
                    self._retry(consumer, [waiting, current, _Polled(polled)], "kafka", exc)
                    current = None
                waiting = current
            if waiting is not None:  # stopping: the last poll is settled and committed like any other
                self._finish(waiting, consumer, producer)
        finally:
            if chunked:
                self.processor.encode.between_chunks = lambda: None
            self._set_ready(False)
            consumer.close(autocommit=False)
            producer.close(timeout=5)
        return self.stats

    def _submit(self, polled) -> _Polled:
        """Catalog records are applied at once (events of the same poll may name their items); events
        are submitted."""
        events_topic = self.config.kafka.events_topic
        batches: dict[str, list[Record]] = {}
        for tp, records in polled.items():
            batches.setdefault(tp.topic, []).extend(
                Record(tp.topic, tp.partition, r.offset, r.key, r.value) for r in records
            )
        self.metrics.batch_size.observe(sum(len(v) for v in batches.values()))
        done = [self.processor.process_items(records) for topic, records in batches.items() if topic != events_topic]
        submitted = self.processor.submit(batches[events_topic]) if events_topic in batches else None
        return _Polled(polled, submitted, done)

    def _finish(self, batch: _Polled, consumer, producer) -> None:
        """Settle a submitted poll, dead-letter its bad records (flushed), commit it."""
        outcomes = [*batch.done, *([self.processor.settle(batch.submitted)] if batch.submitted else [])]
        letters = [d for o in outcomes for d in o.dead_letters]
        if letters:
            futures = [producer.send(self.config.kafka.dlq_topic, key=d.record.key, value=d.record.value or b"",
                                     headers=dead_letter_headers(d)) for d in letters]  # fmt: skip
            producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=30)  # raises KafkaError if the DLQ did not take it
        for outcome in outcomes:
            self._observe(outcome)
        self.stats.batches += 1
        if self.crash.armed:
            self.crash.reached("after_redis_write_before_commit")
        self._commit(consumer, batch.polled)
        if self.crash.armed:
            self.crash.reached("after_commit")
        self.backoff.reset()
        self._set_ready(True)

    def _connect(self, make):
        from kafka.errors import KafkaError

        from p13n.errors import ServiceError

        while not self.stop.is_set():
            try:
                return make()
            except (KafkaError, ServiceError) as exc:  # make_producer says ServiceError for a KafkaError
                self._set_ready(False)
                self.metrics.retries.labels("kafka").inc()
                log.warning("Kafka at %s not reachable (%s); retrying", self.config.kafka.bootstrap, exc)
                self.sleep(self.backoff.next_delay())
        return None

    def _observe(self, outcome: BatchOutcome) -> None:
        m = self.metrics
        m.events.labels("applied").inc(outcome.applied)
        m.events.labels("duplicate").inc(outcome.duplicates)
        m.events.labels("dead_letter").inc(len(outcome.dead_letters))
        for letter in outcome.dead_letters:
            m.dead_letters.labels(letter.record.topic, letter.reason).inc()
        m.items.inc(outcome.items_embedded)
        m.conflicts.inc(outcome.conflicts)
        for stage, seconds in outcome.stage_s.items():
            m.stage_seconds.labels(stage).observe(seconds)
        for freshness in outcome.freshness_s:
            m.freshness.observe(max(0.0, freshness))
        self.stats.applied += outcome.applied
        self.stats.dead_letters += len(outcome.dead_letters)

    def _commit(self, consumer, polled) -> None:
        """Commit what ``polled`` applied, for the partitions still assigned (a partition lost in a
        rebalance is the new owner's: it re-applies the records idempotently)."""
        from kafka.structs import OffsetAndMetadata

        assigned = consumer.assignment()
        offsets = {tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
                   for tp, records in polled.items() if records and tp in assigned}  # fmt: skip
        if offsets:
            consumer.commit(offsets=offsets)
        self._report_lag(consumer)

    def _keep_alive(self, consumer) -> None:
        """Between chunks of a long batch: once a quarter of ``max_poll_interval_ms`` passed since the
        last poll, poll with every partition paused — nothing is fetched, the member stays in the group."""
        if time.monotonic() - self._last_poll < self.config.kafka.max_poll_interval_ms / 1000 / 4:
            return
        paused = consumer.assignment()
        consumer.pause(*paused)
        try:
            got = consumer.poll(timeout_ms=0)
        finally:
            still = consumer.assignment()  # a rebalance in that poll may have changed it
            consumer.resume(*(tp for tp in paused if tp in still))
        self._last_poll = time.monotonic()
        for tp, records in got.items():  # not expected while paused; never skip records if it happens
            if records and tp in consumer.assignment():
                consumer.seek(tp, records[0].offset)

    def _retry(self, consumer, batches: list[_Polled | None], dependency: str, exc: Exception) -> None:
        """Forget the unsettled polls and rewind their partitions to their first offsets; wait a backoff."""
        self._set_ready(False)
        self.metrics.retries.labels(dependency).inc()
        self.processor.abandon()
        delay = self.backoff.next_delay()
        log.warning("%s failed (%s: %s); batch not committed, retrying in %.2fs", dependency, type(exc).__name__, exc, delay)
        first: dict = {}
        for batch in batches:
            for tp, records in (batch.polled if batch is not None else {}).items():
                if records and (tp not in first or records[0].offset < first[tp]):
                    first[tp] = records[0].offset
        assigned = consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:  # a partition lost in a rebalance restarts at its committed offset with its new owner
                consumer.seek(tp, offset)
        self.sleep(delay)

    def _report_lag(self, consumer) -> None:
        from kafka.errors import KafkaError

        for tp in consumer.assignment():
            high = consumer.highwater(tp)
            if high is None:
                continue
            try:
                position = consumer.position(tp, timeout_ms=100)
            except KafkaError as exc:  # e.g. mid-rebalance; lag is telemetry, the next poll reports it
                log.debug("no position for %s: %s", tp, exc)
                continue
            if position is not None:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(0, high - position))


def _rebalance_counter(metrics: ConsumerMetrics):
    """A rebalance listener counting assignments and revocations (``p13n_consumer_rebalances_total``)."""
    from kafka import ConsumerRebalanceListener

    class RebalanceCounter(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked) -> None:
            if revoked:
                metrics.rebalances.labels("revoked").inc()
                log.info("partitions revoked: %s", sorted(revoked))

        def on_partitions_assigned(self, assigned) -> None:
            metrics.rebalances.labels("assigned").inc()
            log.info("partitions assigned: %s", sorted(assigned))

    return RebalanceCounter()


def run_consumer(config: Config, *, stop: threading.Event, metrics_port: int | None = None) -> LoopStats:
    """Build everything from configuration and run the loop (used by ``p13n consume``)."""
    from features.encoder.runtime import Encoder
    from features.redis.store import RedisStore
    from p13n.connections import covisit_rows_warning, redis_client

    encoder = Encoder.for_consumer(config.encoder)
    store = RedisStore(redis_client(config.redis), config, dim=encoder.dimension)
    warning = covisit_rows_warning(store.client, config.state.covisit_top_m)
    if warning is not None:
        log.warning(warning)
    crash = CrashPoints.from_env()  # recovery tests only: off unless P13N_CRASH_AT is set
    processor = BatchProcessor(store, config, encoder.encode, crash=crash)
    metrics = ConsumerMetrics()
    port = config.consumer.metrics_port if metrics_port is None else metrics_port
    health = HealthServer(metrics, port).start() if port else None
    try:
        with folding_process():
            return ConsumerLoop(config, processor, metrics=metrics, health=health, stop=stop, crash=crash).run()
    finally:
        if health is not None:
            health.alive = False
            health.stop()
