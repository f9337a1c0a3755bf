"""Publish a synthetic catalog and event stream to Kafka and wait for the consumer to fold it.

Shared by ``p13n demo`` and ``p13n bench load``: both need recent, realistic users in a running stack,
arriving the way production data does (Kafka → consumer → Redis).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from features.datasets.synthetic import SyntheticData, SyntheticSpec, generate
from p13n.clock import now_ms
from p13n.config import Config

__all__ = ["run_id", "recent_synthetic", "publish", "wait_folded"]


def run_id(clock: Callable[[], int] = now_ms) -> int:
    """A number naming one seeding run (the wall clock's seconds, modulo 100,000): seeded users carry it in
    their ids, so the users of runs on a long-lived stack do not mix. ``clock`` gives epoch milliseconds.

    >>> run_id(lambda: 1_700_000_123_456)
    123
    """
    return clock() // 1000 % 100_000


def recent_synthetic(*, users: int, tenant: str, user_prefix: str, seed: int, days: float = 30.0) -> SyntheticData:
    """A synthetic dataset whose events end now (so decays and recency look like live traffic)."""
    start_ms = now_ms() - int(days * 86_400_000)
    return generate(SyntheticSpec(users=users, events_per_user=40, seed=seed, tenant=tenant, user_prefix=user_prefix,
                                  start_ms=start_ms, days=days))  # fmt: skip


def publish(config: Config, data: SyntheticData):
    """Produce the catalog, then the events (validated); returns the events' ProduceReport."""
    from features.core.events import event_limits
    from p13n.kafka_client import ensure_topics
    from stream.producer import make_producer, produce_lines

    k = config.kafka
    ensure_topics(k.bootstrap, {k.events_topic: k.partitions, k.items_topic: k.partitions, k.dlq_topic: 1})
    producer = make_producer(k)
    try:
        produce_lines(producer, k.items_topic, [(n, json.dumps(i).encode()) for n, i in enumerate(data.items, 1)],
                      schema="items")  # fmt: skip
        return produce_lines(producer, k.events_topic, [(n, json.dumps(e).encode()) for n, e in enumerate(data.events, 1)],
                             limits=event_limits(config.state))  # fmt: skip
    finally:
        producer.close()


def wait_folded(config: Config, data: SyntheticData, *, timeout_s: float = 180.0,
                on_progress: Callable[[int, int], None] = lambda done, total: None) -> list[str]:  # fmt: skip
    """Poll Redis until every event of ``data`` is applied; returns the user ids."""
    from features.encoder.runtime import encoder_dimension
    from features.redis.store import RedisStore
    from p13n.connections import redis_client
    from p13n.devstack import wait_until

    store = RedisStore(redis_client(config.redis), config, dim=encoder_dimension(config.encoder.directory))
    keys = sorted({(e.get("tenant", "default"), e["user_id"]) for e in data.events})
    expected = len({e["event_id"] for e in data.events})

    def folded() -> bool:
        done = sum(s.events_applied for _, s in store.read_users(keys) if s is not None)
        on_progress(done, expected)
        return done >= expected

    wait_until(folded, timeout=timeout_s, what="the consumer to fold the synthetic events", interval=0.25)
    return [user for _, user in keys]
