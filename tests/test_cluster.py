"""``redis.cluster: true`` against a real 3-master cluster of the embedded server (slots assigned here).

* the processing stage and the request path's reads give the same state and the same answers as
  on one node, for the same events;
* ``p13n consume`` keeps its exactly-once effect while the master holding a tenant's global signals
  (and some users) is killed with SIGKILL and restarted from its append-only file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import msgspec
import numpy as np
import pytest

from features.encoder.runtime import Encoder, default_encoder_dir
from features.core.personalize import CandidateIn
from features.core.state_codec import encode_state
from features.redis.store import RedisStore
from features.datasets.synthetic import SyntheticSpec, generate
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
    return Config.from_sources(env={}, overrides=data)


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

    # the consumer embeds catalogs in chunks sized by the measured encode rate, so the two folds chunk
    # differently; its encoder's vectors do not depend on the chunk (tests/features/test_encoder_batching.py)
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
        popularity = single.popularity(tenant, ids, NOW_MS)
        np.testing.assert_array_equal(cluster_store.popularity(tenant, ids, NOW_MS), popularity)
        assert np.any(popularity > 0)
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
                for answer in (scored, rewritten):  # compared in their JSON types, as the API sends them
                    answer = msgspec.to_builtins(answer)
                    answer.pop("timings_ms")
                    out.append(answer)
            empty = msgspec.to_builtins(await personalizer.score(tenant, users[0], [], k=None, explain=False,
                                                                 budget_ms=10_000, now_ms=NOW_MS))  # fmt: skip
            empty.pop("timings_ms")
            out.append(empty)
    finally:
        await personalizer.close()
    return out


@pytest.mark.slow
def test_master_killed_mid_replay_loses_no_acknowledged_event(cluster, cluster_store, consumer_encoder, tmp_path):
    """SIGKILL the master holding the tenant's global signals (and some users) while `p13n consume` applies
    events; restart it on its port and directory (AOF, appendfsync always): the consumer retries, and Redis
    ends as a clean replay — nothing lost, nothing applied twice."""
    from tests.stream.test_consumer import Consumer, consumer_env, produce, synthetic_lines, wait_for_all

    cfg = cluster_store.config
    lines = synthetic_lines(users=60, per_user=30, seed=23)
    events = valid_events(lines)
    users = sorted({(e.tenant, e.user_id) for e in events})
    victim = cluster.node_of(cluster_store.keys.popularity("default"))
    assert any(cluster.node_of(cluster_store.keys.user(t, u)) is victim for t, u in users)
    produce(cfg, lines)
    metrics_port = free_port()
    consumer = Consumer(consumer_env(cfg, P13N_REDIS_CLUSTER="true", P13N_CONSUMER_MAX_BATCH="40"),
                        tmp_path / "consumer.log", metrics_port)  # fmt: skip
    try:
        wait_until(lambda: applied(cluster_store, users) > 300, timeout=90, what="progress", interval=0.01)
        victim.kill()
        wait_until(lambda: consumer.ready() == 503, timeout=30, what="readyz to report the outage")
        victim.start()
        cluster.wait_ok()
        wait_for_all(cluster_store, events, timeout=180, consumers=[consumer])
        assert_matches_replay(cluster_store, events, consumer_encoder.encode)
        wait_until(lambda: consumer.ready() == 200, timeout=30, what="readyz after recovery")
    finally:
        assert consumer.terminate() == 0
    assert "redis failed" in consumer.log.read_text()


def applied(store: RedisStore, users: list[tuple[str, str]]) -> int:
    """Events applied so far, 0 while the cluster cannot answer."""
    from p13n.connections import REDIS_UNAVAILABLE

    try:
        return sum(state.events_applied for _, state in store.read_users(users) if state is not None)
    except REDIS_UNAVAILABLE:
        return 0


def test_a_cluster_group_is_acknowledged_when_sent_and_a_dead_node_raises(config, cluster, cluster_store):
    """The consumer's global deltas must be applied before its users' writes go out: on a cluster each group
    of commands runs when it is sent; a group meeting a dead master raises (never a reply to misread)."""
    from features.redis.deferred import DeferredPipeline
    from p13n.connections import REDIS_UNAVAILABLE

    client, prefix = cluster_store.client, cluster_store.config.redis.prefix
    keys = [f"{prefix}:{{k{n}}}" for n in range(40)]
    victim = cluster.node_of(keys[0])
    alive = next(k for k in keys if cluster.node_of(k) is not victim)
    pipe = DeferredPipeline(client)
    pipe.send([("SET", alive, "first")])
    assert client.get(alive) == b"first"  # applied before any later group is sent
    victim.kill()
    try:
        with pytest.raises(REDIS_UNAVAILABLE):
            pipe.send([("SET", keys[0], "lost")])
        assert pipe.replies() == [True]  # the first group's reply; the failed group left none
    finally:
        victim.start()
        cluster.wait_ok()
    assert client.get(keys[0]) is None


def test_request_path_degrades_while_a_master_is_down_and_recovers(config, cluster, cluster_store, consumer_encoder):
    """The Serve app's Personalizer on a cluster: a dead master gives degraded answers (never an exception),
    and full ones again once it is back (its async cluster client re-learns the node)."""
    items, events, interests = two_tenants()
    fold(cluster_store, cluster_store.config, consumer_encoder.encode, items, events)
    tenant, user = "shop", interests["shop"][0]
    victim = cluster.node_of(cluster_store.keys.user(tenant, user))
    ids = [json.loads(i)["item_id"] for i in items if json.loads(i)["tenant"] == tenant][:30]

    async def scenario() -> tuple[list, list]:
        from serving.personalizer import Personalizer

        encoder = Encoder.from_directory(default_encoder_dir())

        async def encode(text: str, remaining_ms: float) -> np.ndarray:
            return encoder.encode([text])[0]

        personalizer = Personalizer(cluster_store.config, encode, encoder.count_tokens, encoder.dimension)

        async def answers(budget_ms: float = 5000) -> list[list[str]]:
            scored = await personalizer.score(tenant, user, [CandidateIn(i) for i in ids], k=5, explain=False,
                                              budget_ms=budget_ms, now_ms=NOW_MS)  # fmt: skip
            rewritten = await personalizer.rewrite(tenant, user, [{"role": "user", "content": "hi"}], max_tokens=128,
                                                   budget_ms=budget_ms, now_ms=NOW_MS)  # fmt: skip
            return [scored.degraded, rewritten.degraded]

        try:
            assert await answers() == [[], []]
            victim.kill()
            during = await answers(budget_ms=1000)  # a dead master is an error at once, not a wait past the budget
            victim.start()
            await asyncio.to_thread(cluster.wait_ok)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            after = await answers()
            while after != [[], []] and loop.time() < deadline:
                await asyncio.sleep(0.05)  # polling interval
                after = await answers()
            return during, after
        finally:
            await personalizer.close()

    during, after = asyncio.run(scenario())
    assert during == [["redis_unavailable"], ["redis_unavailable"]]
    assert after == [[], []]
