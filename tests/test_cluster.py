"""``redis.cluster: true`` against a real 3-master cluster of the embedded server (slots assigned here).

* the processing stage and the request path's reads give the same state and the same answers as
  on one node, for the same events;
* ``p13n consume`` keeps its exactly-once effect while the master holding a tenant's global signals
  (and some users) is killed with SIGKILL and restarted from its append-only file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator

import numpy as np
import pytest

from features.encoder import Encoder, default_encoder_dir
from features.personalize import CandidateIn
from features.state_codec import encode_state
from features.store import RedisStore
from features.synthetic import SyntheticSpec, generate
from p13n.config import Config
from p13n.connections import redis_client as make_client
from p13n.devstack import free_port, wait_until
from stream.processing import BatchProcessor
from tests.cluster import LocalCluster
from tests.stream.replay import NOW_MS, assert_matches_replay, records_for, valid_events

pytestmark = pytest.mark.config(state={"covisit_top_m": 1000})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def on_cluster(config: Config, cluster: LocalCluster) -> Config:
    """``config`` with Redis being the cluster (same prefix, so the same keys)."""
    data = config.to_dict()
    data["redis"].update(url=cluster.url, cluster=True)
    return Config.from_sources(env={}, use_dev_stack=False, overrides=data)


@pytest.fixture
def cluster_store(config, cluster, consumer_encoder) -> Iterator[RedisStore]:
    cfg = on_cluster(config, cluster)
    client = make_client(cfg.redis)
    yield RedisStore(client, cfg, dim=consumer_encoder.dimension)
    keys = list(client.scan_iter(match=f"{cfg.redis.prefix}:*", count=1000))
    for key in keys:
        client.delete(key)
    client.close()


def test_the_factory_builds_cluster_clients_for_sync_and_async(config, cluster):
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    from p13n.connections import async_redis_client

    cfg = on_cluster(config, cluster)
    sync = make_client(cfg.redis)
    assert isinstance(sync, RedisCluster) and len(sync.get_primaries()) == 3
    sync.close()

    async def nodes() -> int:
        client = async_redis_client(cfg.redis)
        try:
            await client.ping()
            return len(client.get_primaries())
        finally:
            await client.aclose()

    assert isinstance(async_redis_client(cfg.redis), AsyncRedisCluster)
    assert asyncio.run(nodes()) == 3


def two_tenants() -> tuple[list[bytes], list[bytes], dict]:
    items, events, interests = [], [], {}
    for n, tenant in enumerate(("shop", "news")):
        data = generate(SyntheticSpec(users=15, events_per_user=25, seed=60 + n, tenant=tenant,
                                      start_ms=NOW_MS - 20 * 86_400_000, days=20.0))  # fmt: skip
        items += [json.dumps(i).encode() for i in data.items]
        events += [json.dumps(e).encode() for e in data.events]
        interests[tenant] = sorted(data.interests)
    return items, events, interests


def fold(store: RedisStore, config: Config, encode, items: list[bytes], events: list[bytes]) -> None:
    processor = BatchProcessor(store, config, encode, clock_ms=lambda: NOW_MS)
    processor.process_items(records_for(items, "items"))
    for start in range(0, len(events), 200):  # several batches, the same ones on both sides
        outcome = processor.process_events(records_for(events[start : start + 200], "events"))
        assert not outcome.dead_letters


def test_cluster_holds_the_same_state_and_gives_the_same_answers_as_one_node(
    config, redis_client, cluster_store, cluster, consumer_encoder
):
    single = RedisStore(redis_client, config, dim=consumer_encoder.dimension)
    items, events, interests = two_tenants()
    fold(single, config, consumer_encoder.encode, items, events)
    fold(cluster_store, cluster_store.config, consumer_encoder.encode, items, events)

    # the keys are spread over all three masters, and hold byte-identical states
    spread = {cluster.node_of(cluster_store.keys.user(t, u)).port for t in interests for u in interests[t]}
    assert len(spread) == 3
    for tenant, users in interests.items():
        keys = [(tenant, u) for u in users]
        want = [encode_state(s) for _, s in single.read_users(keys)]
        got = [encode_state(s) for _, s in cluster_store.read_users(keys)]
        assert got == want, tenant
        ids = sorted({json.loads(i)["item_id"] for i in items if json.loads(i)["tenant"] == tenant})
        np.testing.assert_array_equal(cluster_store.popularity(tenant, ids, NOW_MS), single.popularity(tenant, ids, NOW_MS))
        assert np.any(single.popularity(tenant, ids, NOW_MS) > 0)
        for item in ids:
            assert cluster_store.covisit_neighbours(tenant, item) == single.covisit_neighbours(tenant, item)
        stored = single.get_items(tenant, ids)
        assert cluster_store.get_items(tenant, ids).keys() == stored.keys() and stored

    answers = {name: asyncio.run(request_path_answers(store.config, interests, items))
               for name, store in (("single", single), ("cluster", cluster_store))}  # fmt: skip
    assert answers["cluster"] == answers["single"]
    assert all(a["degraded"] == [] for a in answers["single"]), answers["single"]


async def request_path_answers(config: Config, interests: dict, items: list[bytes]) -> list[dict]:
    """The Serve app's Personalizer (its async client from the factory) answering score and rewrite."""
    from serving.personalizer import Personalizer

    encoder = Encoder.from_directory(default_encoder_dir())

    async def encode(text: str, remaining_ms: float) -> np.ndarray:
        return encoder.encode([text])[0]

    personalizer = Personalizer(config, encode, encoder.count_tokens, encoder.dimension)
    out = []
    try:
        for tenant, users in interests.items():
            ids = [json.loads(i)["item_id"] for i in items if json.loads(i)["tenant"] == tenant][:60]
            for user in users[:5]:
                scored = await personalizer.score(tenant, user, [CandidateIn(i) for i in ids], k=10, explain=True,
                                                  budget_ms=10_000, now_ms=NOW_MS)  # fmt: skip
                rewritten = await personalizer.rewrite(tenant, user, [{"role": "user", "content": "what next?"}],
                                                       max_tokens=256, budget_ms=10_000, now_ms=NOW_MS)  # fmt: skip
                for answer in (scored, rewritten):
                    answer.pop("timings_ms")
                    out.append(answer)
            empty = await personalizer.score(tenant, users[0], [], k=None, explain=False, budget_ms=10_000, now_ms=NOW_MS)
            empty.pop("timings_ms")
            out.append(empty)
    finally:
        await personalizer.close()
    return out
