"""`p13n consume` under faults, against the real embedded broker and Redis: bulk catalogs that outlast a
poll interval, partitions lost before a retry, the broker restarted mid-stream, SIGTERM mid-batch."""

from __future__ import annotations

import contextlib
import json
import re
import time
import urllib.request

import pytest

from features.redis.store import RedisStore
from p13n.config import Config
from p13n.devstack import ensure_topics, free_port, wait_until
from stream.producer import make_producer, produce_lines
from tests.stream.replay import assert_matches_replay, valid_events
from tests.stream.test_consumer import Consumer, applied_events, consumer_env, synthetic_lines, wait_for_all

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
    """The consumer's /metrics as {series with labels: value}; empty while it does not answer yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
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


def committed(config: Config) -> dict[int, int]:
    """The group's committed offset of each events partition."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap, group_id=config.kafka.group_id,
                             enable_auto_commit=False)  # fmt: skip
    try:
        partitions = sorted(consumer.partitions_for_topic(config.kafka.events_topic))
        return {p: consumer.committed(TopicPartition(config.kafka.events_topic, p)) or 0 for p in partitions}
    finally:
        consumer.close()


def read_events_topic(config: Config, total: int) -> dict[int, list]:
    """The events topic's first ``total`` records, per partition (the log's end offsets, read: the embedded
    broker's ListOffsets answers below the last record)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(config.kafka.events_topic, bootstrap_servers=config.kafka.bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    out: dict[int, list] = {}
    deadline = time.monotonic() + 30
    try:
        while sum(map(len, out.values())) < total and time.monotonic() < deadline:
            for tp, batch in consumer.poll(timeout_ms=300).items():
                out.setdefault(tp.partition, []).extend(batch)
    finally:
        consumer.close()
    assert sum(map(len, out.values())) == total
    return out


def test_sigterm_mid_batch_finishes_and_commits_the_batch(config, store, consumer_encoder, tmp_path):
    """SIGTERM while a poll is being processed (first-seen items being embedded): the poll is finished,
    its offsets committed, and Redis holds exactly the events below the committed offsets."""
    lines = [json.dumps({"event_id": f"s{n}", "user_id": f"u{n % 40}", "tenant": ("default", "acme")[n % 2],
                         "type": "click", "timestamp": 1_767_225_600_000 + n * 1000, "item_id": f"sku-{n % 300}",
                         "item_text": f"Item {n % 300} of tenant {n % 2}"}).encode() for n in range(900)]  # fmt: skip
    produce_to(config, config.kafka.events_topic, lines)
    port = free_port()
    consumer = Consumer(consumer_env(config, P13N_CONSUMER_SHUTDOWN_GRACE_S="120"), tmp_path / "consumer.log", port)
    try:
        wait_until(lambda: scrape(port).get("p13n_consumer_batch_size_count", 0) >= 1, timeout=60,
                   what="a poll being processed", interval=0.02)  # fmt: skip
        before = scrape(port)
    finally:
        code = consumer.terminate()
    assert before.get('p13n_consumer_events_total{outcome="applied"}', 0) == 0, "premise: SIGTERM lands mid-batch"
    output = consumer.log.read_text()
    assert code == 0, output[-3000:]
    stopped = re.search(r"consumer stopped: (\d+) batches, (\d+) events applied", output)
    assert stopped and int(stopped[1]) >= 1 and int(stopped[2]) > 0, output[-3000:]
    offsets = committed(config)
    log = read_events_topic(config, len(lines))
    # the whole backlog was that one poll (one fetch from one broker): finished and committed to the end
    assert offsets == {p: records[-1].offset + 1 for p, records in log.items()}
    assert sum(offsets.values()) == int(stopped[2])  # every event applied is committed, and no other
    events = valid_events([r.value for records in log.values() for r in records if r.offset < offsets[r.partition]])
    assert len(events) == sum(offsets.values())
    assert_matches_replay(store, events, consumer_encoder.encode)
    assert applied_events(store, sorted({(t, f"u{n}") for t in ("default", "acme") for n in range(40)})) == len(events)


def test_broker_restart_while_consuming_recovers_and_applies_every_event_once(config, consumer_encoder, tmp_path,
                                                                             redis_client):  # fmt: skip
    """The broker is killed and restarted (same address) under a running consumer: it must neither exit nor
    apply anything twice, and consume what is produced after the restart. The dev broker keeps its log in
    memory, so the restarted one starts empty with offsets from 0 again: the events after the restart are
    of other tenants (a broker that keeps its log, as Kafka does, continues its offsets)."""
    import os
    import signal

    from p13n.devstack import DevStack, spawn_detached
    from p13n.devstack.servers import tcp_answers as answers

    stack = DevStack(tmp_path / "stack")
    running, _ = stack.up(services=("kafka",))
    broker = running["kafka"]
    cfg = Config.from_sources(env={}, overrides={
        "redis": {"url": config.redis.url, "prefix": config.redis.prefix}, "state": {"covisit_top_m": 1000},
        "kafka": {**config.to_dict()["kafka"], "bootstrap": broker.url}})  # fmt: skip
    store = RedisStore(redis_client, cfg, dim=consumer_encoder.dimension)
    before = [line.replace(b'"tenant": "', b'"tenant": "b-') for line in synthetic_lines(users=40, per_user=20, seed=41)]
    after = [line.replace(b'"tenant": "', b'"tenant": "a-') for line in synthetic_lines(users=40, per_user=20, seed=42)]
    produce_to(cfg, cfg.kafka.events_topic, before)
    port = free_port()
    consumer = Consumer(consumer_env(cfg, P13N_CONSUMER_MAX_BATCH="100"), tmp_path / "consumer.log", port)
    pid = broker.pid
    try:
        wait_for_all(store, valid_events(before), timeout=120, consumers=[consumer])
        os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not answers(broker.port), timeout=10, what="the broker gone")

        def restarted() -> bool:  # the port just released may still be busy for a moment
            nonlocal pid
            pid = spawn_detached(broker.argv, cwd=tmp_path / "stack", log=tmp_path / "stack" / "kafka-2.log")
            try:
                wait_until(lambda: answers(broker.port), timeout=5, what="the restarted broker")
                return True
            except Exception:  # noqa: BLE001 - did not bind: stop it and try again until the deadline
                os.killpg(pid, signal.SIGKILL)
                return False

        wait_until(restarted, timeout=60, what="the broker restarted on its port", interval=0.5)
        assert consumer.proc.poll() is None, consumer.log.read_text()[-3000:]
        produce_to(cfg, cfg.kafka.events_topic, after)
        wait_for_all(store, valid_events(before + after), timeout=180, consumers=[consumer])
        assert_matches_replay(store, valid_events(before + after), consumer_encoder.encode)
        wait_until(lambda: consumer.ready() == 200, timeout=30, what="readyz after the restart")
    finally:
        code = consumer.terminate()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        stack.down()
    assert code == 0, consumer.log.read_text()[-3000:]
