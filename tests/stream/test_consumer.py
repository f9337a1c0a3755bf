"""`p13n consume` against the real embedded broker and Redis: DLQ, crashes, two members, Redis restarts."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from features.redis.store import RedisStore
from features.datasets.synthetic import SyntheticSpec, generate
from p13n.config import Config
from p13n.devstack import ensure_topics, free_port, wait_until
from stream.producer import make_producer, produce_lines
from tests.conftest import REPO, clean_env
from tests.stream.replay import two_tenant_lines, assert_matches_replay, valid_events

pytestmark = [pytest.mark.slow, pytest.mark.config(state={"covisit_top_m": 1000})]


def consumer_env(config: Config, **extra: str) -> dict[str, str]:
    k = config.kafka
    settings = dict(
        P13N_REDIS_URL=config.redis.url,
        P13N_REDIS_PREFIX=config.redis.prefix,
        P13N_KAFKA_BOOTSTRAP=k.bootstrap,
        P13N_KAFKA_EVENTS_TOPIC=k.events_topic,
        P13N_KAFKA_ITEMS_TOPIC=k.items_topic,
        P13N_KAFKA_DLQ_TOPIC=k.dlq_topic,
        P13N_KAFKA_GROUP_ID=k.group_id,
        P13N_KAFKA_SESSION_TIMEOUT_MS="6000",
        P13N_KAFKA_HEARTBEAT_INTERVAL_MS="1000",
        P13N_KAFKA_MAX_POLL_INTERVAL_MS="5000",
        P13N_CONSUMER_BACKOFF_MAX_MS="500",
        # no top-M trimming in these tests: a bounded sketch trimmed per batch depends on batch
        # boundaries, and these tests check the exactly-once effect, not the sketch
        P13N_STATE_COVISIT_TOP_M=str(config.state.covisit_top_m),
    )
    return clean_env(**{**settings, **extra})


class Consumer:
    """A `p13n consume` subprocess."""

    def __init__(self, env: dict[str, str], log: Path, metrics_port: int = 0) -> None:
        self.log = log
        self.metrics_port = metrics_port
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "p13n.cli", "consume", "--metrics-port", str(metrics_port)],
                                         cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def ready(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/readyz", timeout=1) as r:
                return r.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None


def produce(config: Config, lines: list[bytes], rate: float | None = None) -> None:
    ensure_topics(config.kafka.bootstrap, {config.kafka.events_topic: 4, config.kafka.items_topic: 4,
                                           config.kafka.dlq_topic: 1})  # fmt: skip
    producer = make_producer(config.kafka)
    try:
        produce_lines(producer, config.kafka.events_topic, list(enumerate(lines, 1)), validate=False, rate=rate)
    finally:
        producer.close()


def applied_events(store: RedisStore, users: list[tuple[str, str]]) -> int:
    return sum(state.events_applied for _, state in store.read_users(users) if state is not None)


def wait_for_all(store: RedisStore, events, timeout: float, consumers: list[Consumer]) -> None:
    users = sorted({(e.tenant, e.user_id) for e in events})
    expected = len({(e.tenant, e.user_id, e.event_id) for e in events})

    def done() -> bool:
        for c in consumers:
            assert c.proc.poll() is None, f"consumer exited: {c.log.read_text()[-2000:]}"
        return applied_events(store, users) >= expected

    wait_until(done, timeout=timeout, what=f"{expected} events applied", interval=0.2)
    assert applied_events(store, users) == expected  # and not more: nothing applied twice


def synthetic_lines(users: int, per_user: int, seed: int) -> list[bytes]:
    """About ``users`` users' events, half of them in tenant "default", half in "acme" (same item ids,
    other item texts)."""
    return two_tenant_lines((users + 1) // 2, per_user, seed)


@pytest.fixture
def store(redis_client, config, consumer_encoder) -> RedisStore:
    return RedisStore(redis_client, config, dim=consumer_encoder.dimension)


def read_dlq(config: Config, expected: int, timeout: float = 30.0) -> list:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(config.kafka.dlq_topic, bootstrap_servers=config.kafka.bootstrap, group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    records: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def test_bad_input_goes_to_the_dlq_and_good_neighbours_are_applied(config, store, consumer_encoder, tmp_path):
    good = synthetic_lines(users=8, per_user=15, seed=11)
    bad = {
        b"{definitely not json": "invalid_json",
        b"\x00\x01\x02\xff binary garbage": "invalid_json",
        b"": "empty",
        json.dumps({"event_id": "x1", "user_id": ["u"], "type": "view", "timestamp": 1, "item_id": "i"}).encode(): "wrong_type",
        json.dumps({"event_id": "x2", "user_id": "u", "type": "view", "timestamp": 1, "item_id": "i" * 300}).encode(): "too_long",
        json.dumps({"event_id": "x3", "user_id": "u", "type": "beam", "timestamp": 1, "item_id": "i"}).encode(): "unknown_type",
        json.dumps({"event_id": "x4", "user_id": "u", "type": "view", "timestamp": "soon", "item_id": "i"}).encode(): "bad_timestamp",
    }  # fmt: skip
    lines = good[:40] + list(bad) + good[40:]
    produce(config, lines)
    port = free_port()
    consumer = Consumer(consumer_env(config), tmp_path / "consumer.log", metrics_port=port)
    try:
        events = valid_events(good)
        wait_for_all(store, events, timeout=90, consumers=[consumer])
        letters = read_dlq(config, expected=len(bad))
        got = {r.value: dict(r.headers) for r in letters}
        assert set(got) == set(bad)
        for value, headers in got.items():
            assert headers["p13n-reason"].decode() == bad[value]
            assert headers["p13n-source-topic"].decode() == config.kafka.events_topic
            assert int(headers["p13n-source-offset"]) >= 0
        assert_matches_replay(store, events, consumer_encoder.encode)
        wait_until(lambda: consumer.ready() == 200, timeout=10, what="readyz")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            metrics = r.read().decode()
        assert 'p13n_consumer_dead_letters_total{reason="too_long"' in metrics or "reason=\"too_long\"" in metrics
        assert "p13n_consumer_freshness_seconds_bucket" in metrics and "p13n_consumer_lag" in metrics
    finally:
        assert consumer.terminate() == 0, consumer.log.read_text()[-2000:]
    assert "consumer stopped" in consumer.log.read_text()


def test_sigkill_at_random_points_leaves_redis_as_a_clean_replay(config, store, consumer_encoder, tmp_path):
    lines = synthetic_lines(users=100, per_user=30, seed=5)  # ~3,000 events with duplicates and disorder
    events = valid_events(lines)
    produce(config, lines)
    # small global calls: a kill also lands between the calls of one partition's global deltas
    env = consumer_env(config, P13N_CONSUMER_MAX_BATCH="40", P13N_CONSUMER_GLOBAL_DELTAS_PER_CALL="8")
    users = sorted({(e.tenant, e.user_id) for e in events})
    total = len({(e.tenant, e.user_id, e.event_id) for e in events})
    rnd = random.Random(1234)
    kills = 0
    for round_ in range(4):
        consumer = Consumer(env, tmp_path / f"consumer-{round_}.log")
        target = applied_events(store, users) + rnd.randint(100, 500)
        wait_until(lambda: applied_events(store, users) >= min(target, total) or consumer.proc.poll() is not None,
                   timeout=120, what="progress before the kill", interval=0.01)  # fmt: skip
        time.sleep(rnd.random() * 0.05)  # land somewhere inside a batch
        consumer.kill()
        kills += 1
        if applied_events(store, users) >= total:
            break
    final = Consumer(env, tmp_path / "consumer-final.log")
    try:
        wait_for_all(store, events, timeout=180, consumers=[final])
        assert_matches_replay(store, events, consumer_encoder.encode)
    finally:
        final.terminate()
    assert kills >= 2


def test_two_members_split_partitions_and_equal_one(config, store, consumer_encoder, tmp_path):
    lines = synthetic_lines(users=60, per_user=25, seed=8)
    events = valid_events(lines)
    env = consumer_env(config, P13N_CONSUMER_MAX_BATCH="50")
    ensure_topics(config.kafka.bootstrap, {config.kafka.events_topic: 4, config.kafka.items_topic: 4,
                                           config.kafka.dlq_topic: 1})  # fmt: skip
    first = Consumer(env, tmp_path / "a.log")
    second = Consumer(env, tmp_path / "b.log")
    try:
        produce(config, lines, rate=250)  # spread over seconds so both members are assigned while it runs
        wait_for_all(store, events, timeout=180, consumers=[first, second])
        assert_matches_replay(store, events, consumer_encoder.encode)
    finally:
        codes = [first.terminate(), second.terminate()]
    assert codes == [0, 0]
    applied = [int(c.log.read_text().split("batches, ")[-1].split(" events applied")[0]) for c in (first, second)]
    assert sum(applied) == len({(e.tenant, e.user_id, e.event_id) for e in events})
    assert all(n > 0 for n in applied), applied


def test_redis_restart_mid_replay_loses_nothing_and_applies_nothing_twice(config, consumer_encoder, tmp_path):
    from p13n.connections import redis_client as make_client
    from p13n.devstack import redis_argv, redis_server_binary, spawn_detached

    port = free_port()
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    argv = redis_argv(redis_server_binary(), port, data_dir, durable=True)

    def start() -> int:
        pid = spawn_detached(argv, cwd=data_dir, log=data_dir / "redis.log")
        client = make_client(config.redis.__class__(url=f"redis://127.0.0.1:{port}/0"), timeout_ms=200)
        wait_until(lambda: _pings(client), timeout=30, what="restarted redis")
        return pid

    pid = start()
    cfg = Config.from_sources(env={}, overrides={**_overrides(config), "redis": {
        "url": f"redis://127.0.0.1:{port}/0", "prefix": config.redis.prefix}})  # fmt: skip
    client = make_client(cfg.redis)
    store = RedisStore(client, cfg, dim=consumer_encoder.dimension)
    lines = synthetic_lines(users=60, per_user=30, seed=21)
    events = valid_events(lines)
    produce(cfg, lines)
    metrics_port = free_port()
    consumer = Consumer(consumer_env(cfg, P13N_CONSUMER_MAX_BATCH="40"), tmp_path / "consumer.log", metrics_port)
    users = sorted({(e.tenant, e.user_id) for e in events})
    try:
        wait_until(lambda: applied_events(store, users) > 300, timeout=90, what="progress", interval=0.01)
        os.kill(pid, signal.SIGKILL)  # appendfsync always: every acknowledged write is on disk
        wait_until(lambda: consumer.ready() == 503, timeout=30, what="readyz to report the outage")
        pid = start()
        wait_for_all(store, events, timeout=180, consumers=[consumer])
        assert_matches_replay(store, events, consumer_encoder.encode)
        wait_until(lambda: consumer.ready() == 200, timeout=30, what="readyz after recovery")
    finally:
        consumer.terminate()
        os.kill(pid, signal.SIGTERM)
    assert "redis failed" in consumer.log.read_text()


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
        return False


def _overrides(config: Config) -> dict:
    data = config.to_dict()
    return {"kafka": data["kafka"], "state": data["state"]}
