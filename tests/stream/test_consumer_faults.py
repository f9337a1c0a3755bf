"""`p13n consume` under faults, against the real embedded broker and Redis: bulk catalogs that outlast a
poll interval, partitions lost before a retry, the broker restarted mid-stream, SIGTERM mid-batch."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from features.store import RedisStore
from p13n.config import Config
from p13n.devstack import ensure_topics, free_port, wait_until
from stream.producer import make_producer, produce_lines
from tests.stream.test_consumer import Consumer, consumer_env

pytestmark = [pytest.mark.slow, pytest.mark.config(state={"covisit_top_m": 1000})]

GENRES = ("Comedy", "Drama", "Thriller", "Animation", "Documentary", "Western", "Musical", "Horror")


@pytest.fixture
def store(redis_client, config, consumer_encoder) -> RedisStore:
    return RedisStore(redis_client, config, dim=consumer_encoder.dimension)


def produce_to(config: Config, topic: str, lines: list[bytes]) -> None:
    ensure_topics(config.kafka.bootstrap, {config.kafka.events_topic: 4, config.kafka.items_topic: 4,
                                           config.kafka.dlq_topic: 1})  # fmt: skip
    producer = make_producer(config.kafka)
    try:
        produce_lines(producer, topic, list(enumerate(lines, 1)), validate=False)
    finally:
        producer.close()


def scrape(port: int) -> dict[str, float]:
    """The consumer's /metrics as {series with labels: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        text = r.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^([a-z0-9_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def test_a_bulk_catalog_embeds_across_many_poll_intervals_without_a_rebalance(config, store, consumer_encoder,
                                                                               tmp_path):  # fmt: skip
    """MovieLens' 9,742 titles on p13n.items made one poll's embedding outlast max_poll_interval_ms: the group
    rebalanced, the commit failed and the retry sought a lost partition (consumer dead). Here a catalog takes
    several poll intervals to embed (measured below); every item must land, in one assignment."""
    interval_ms = 2000

    def title(k: int) -> str:
        return f"Movie {k}: a {GENRES[k % len(GENRES)].lower()} film from {1950 + k % 70}"

    started = time.perf_counter()
    consumer_encoder.encode([title(k) for k in range(64)])
    rate = 64 / (time.perf_counter() - started)  # titles/s on this machine now
    n = int(rate * 3 * interval_ms / 1000)  # about three poll intervals' worth of embedding
    titles = [title(k) for k in range(n)]
    lines = [json.dumps({"item_id": f"movie-{k}", "text": t, "attributes": {"genre": GENRES[k % len(GENRES)]}}).encode()
             for k, t in enumerate(titles)]  # fmt: skip
    produce_to(config, config.kafka.items_topic, lines)
    port = free_port()
    consumer = Consumer(consumer_env(config, P13N_KAFKA_MAX_POLL_INTERVAL_MS=str(interval_ms)),
                        tmp_path / "consumer.log", metrics_port=port)  # fmt: skip
    ids = [f"movie-{k}" for k in range(n)]

    def all_stored() -> bool:
        assert consumer.proc.poll() is None, f"consumer exited: {consumer.log.read_text()[-3000:]}"
        got = store.get_items("default", ids)
        return len(got) == n and all(info.vector is not None for info in got.values())

    try:
        wait_until(all_stored, timeout=180, what=f"{n} catalog items stored", interval=0.5)
        wait_until(lambda: scrape(port).get("p13n_consumer_items_embedded_total") == n, timeout=10,
                   what="the catalog's poll committed")  # fmt: skip
        metrics = scrape(port)
        assert metrics['p13n_consumer_rebalances_total{event="assigned"}'] == 1, consumer.log.read_text()[-3000:]
        assert metrics.get('p13n_consumer_rebalances_total{event="revoked"}', 0) == 0
        assert "poll timeout has expired" not in consumer.log.read_text()
    finally:
        assert consumer.terminate() == 0, consumer.log.read_text()[-3000:]


def test_a_retry_after_losing_a_partition_rewinds_only_the_partitions_still_assigned(config, store, consumer_encoder):
    """The retry path used to seek every partition of the failed polls: one lost in a rebalance raised
    ``ValueError: Unassigned partition`` and killed the consumer."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import RebalanceInProgressError

    from stream.consumer import ConsumerLoop, _Polled
    from stream.processing import BatchProcessor
    from stream.records import Record

    produce_to(config, config.kafka.events_topic, [b'{"x": %d}' % n for n in range(20)])
    kept, lost = TopicPartition(config.kafka.events_topic, 0), TopicPartition(config.kafka.events_topic, 1)
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap, group_id=None, enable_auto_commit=False)
    try:
        consumer.assign([kept])  # `lost` went to another member in a rebalance
        consumer.seek(kept, 7)
        loop = ConsumerLoop(config, BatchProcessor(store, config, consumer_encoder.encode), sleep=lambda s: False)
        polled = {kept: [Record(kept.topic, 0, 3, None, b"")], lost: [Record(lost.topic, 1, 5, None, b"")]}
        loop._retry(consumer, [_Polled(polled), None], "kafka", RebalanceInProgressError())
        assert consumer.position(kept) == 3
        assert consumer.assignment() == {kept}
    finally:
        consumer.close()
