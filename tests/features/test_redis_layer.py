"""The one Redis layer: the sans-I/O commands and parsers give the same answers on both executors — the sync store
on redis-py and a ``redis.asyncio`` pipeline, the Serve app's — against a real server, with clients from the one
factory (:func:`p13n.connections.redis_client`)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from features.core.events import Event
from features.core.state import ItemInfo, UserState
from features.redis import global_signals, items, request, users
from features.redis.commands import queue
from features.redis.store import APPLIED, RedisStore, UserWrite
from p13n.connections import redis_client

DIM = 8
NOW_MS = 5_000_000


@pytest.fixture
def store(redis_client, config) -> RedisStore:
    return RedisStore(redis_client, config, dim=DIM)


def _seed(store: RedisStore) -> list[str]:
    """A user who clicked two items, three stored items (one with a vector only from event text), their popularity."""
    rng = np.random.default_rng(0)
    catalog = {f"i{n}": ItemInfo(vector=rng.standard_normal(DIM).astype(np.float32), attributes={"genre": f"g{n}"},
                                 text=f"item {n}") for n in range(2)}  # fmt: skip
    store.put_items("default", catalog)
    store.put_item_vectors("default", {"i2": ("from an event", rng.standard_normal(DIM).astype(np.float32))})
    state = UserState.new(store.spec)
    state.fold([Event(event_id=f"e{n}", user_id="u1", type="click", ts_ms=1_000 * (n + 1), item_id=f"i{n}")
                for n in range(2)], catalog)  # fmt: skip
    assert store.write_users([UserWrite("default", "u1", 0, state)]) == [APPLIED]
    store.apply_globals("default", 0, 1, [("i0", 1_000, 2.0), ("i1", 2_000, 1.0)], [("i0", "i1")])
    return ["i0", "i1", "i2", "unknown"]


async def _async_reads(config, store: RedisStore, ids: list[str]):
    client = redis_client(config.redis, asyncio=True)
    try:
        pipe = client.pipeline(transaction=False)
        store.queue_request(pipe, "default", "u1", ids, ids)
        user, found, popularity = store.parse_request(await pipe.execute(), ids, ids, NOW_MS)
        pipe = client.pipeline(transaction=False)
        queue(pipe, global_signals.covisit_commands(store.keys, "default", ["i0"], ids))
        covisit = global_signals.parse_covisit(await pipe.execute(), 1, len(ids))
        pipe = client.pipeline(transaction=False)
        queue(pipe, users.read_commands(store.keys, [("default", "u1"), ("default", "nobody")]))
        versions = [v for v, _ in users.parse_users(await pipe.execute(), store.spec)]
        return user, found, popularity, covisit, versions
    finally:
        await client.aclose()


def test_the_asyncio_executor_reads_what_the_sync_store_reads(store, config):
    ids = _seed(store)
    user, found, popularity = store.read_request("default", "u1", ids, NOW_MS)
    a_user, a_found, a_popularity, a_covisit, a_versions = asyncio.run(_async_reads(config, store, ids))
    assert user is not None and a_user is not None and a_user.events_applied == user.events_applied == 2
    assert [h.item_id for h in a_user.history] == [h.item_id for h in user.history] == ["i0", "i1"]
    assert sorted(found) == sorted(a_found) == ["i0", "i1", "i2"]
    for item_id, info in found.items():
        np.testing.assert_array_equal(a_found[item_id].vector, info.vector)
        assert (a_found[item_id].text, a_found[item_id].attributes) == (info.text, info.attributes)
    assert found["i2"].text == "from an event"
    np.testing.assert_array_equal(a_popularity, popularity)
    assert popularity[0] > popularity[1] > 0 and popularity[2] == popularity[3] == 0
    np.testing.assert_array_equal(a_covisit, store.covisit_matrix("default", ["i0"], ids))
    assert a_covisit[0, 1] > 0 and a_covisit[0, 2] == 0
    assert a_versions[0] == store.read_users([("default", "u1")])[0][0] != 0 and a_versions[1] == 0


def test_the_sans_io_modules_build_commands_without_a_client(store):
    """No client in sight: commands are tuples, replies are parsed from plain values."""
    keys = store.keys
    assert request.request_commands(keys, "t", "u", [], []) == [
        ("HGET", keys.user("t", "u"), "s"), ("HGET", keys.global_meta("t"), "landmark"),
        ("EXISTS", keys.popularity("t"))]  # fmt: skip
    assert items.delete_commands(keys, "t", ["a"]) == [("HDEL", keys.item_shard("t", "a"), "v:a", "m:a")]
    assert users.delete_command(keys, "t", "u") == ("DEL", keys.user("t", "u"))
    user, found, popularity = request.parse_request([None, None, 0], [], NOW_MS, spec=store.spec,
                                                    dtype=store.vector_dtype, tau_s=3600.0)  # fmt: skip
    assert user is None and found == {} and popularity.shape == (0,)
