"""The Redis store against a real server: atomic, idempotent writes and faithful reads."""

from __future__ import annotations

import numpy as np
import pytest

from features.core.events import Event
from features.core.signals import CoVisitation, Popularity
from features.core.state import ItemInfo, UserState
from features.redis.store import APPLIED, CONFLICT, RedisStore, UserWrite

DIM = 8


@pytest.fixture
def store(redis_client, config) -> RedisStore:
    return RedisStore(redis_client, config, dim=DIM)


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def click(n: int, item: str, ts_ms: int, user: str = "u1") -> Event:
    return Event(event_id=f"e{n}", user_id=user, type="click", ts_ms=ts_ms, item_id=item)


def folded(store: RedisStore, events, items) -> UserState:
    state = UserState.new(store.spec)
    state.fold(events, items)
    return state


def test_user_write_then_read_round_trips(store):
    items = {"a": ItemInfo(vector=vec(1), attributes={"category": "jazz"})}
    state = folded(store, [click(1, "a", 1_000_000)], items)
    state.mark_offset(0, 5)
    assert store.write_users([UserWrite("default", "u1", 0, state)]) == [APPLIED]
    ((version, back),) = store.read_users([("default", "u1")])
    assert version != 0
    assert back.offsets == {0: 5}  # the applied offset is stored once: in the state, under its version
    np.testing.assert_allclose(back.positive.sums, state.positive.sums, rtol=1e-6)
    assert back.history == state.history
    assert back.attribute_preferences(1_000_000) == pytest.approx(state.attribute_preferences(1_000_000))


def test_stale_version_writes_nothing(store, redis_client):
    """The write is a compare-and-set on the version the state was read at. A replay after a crash
    (the same offsets again) never reaches it: the re-read state holds its applied offsets and the fold
    plan skips them (``tests/stream/test_plan.py``)."""
    state = folded(store, [click(1, "a", 1_000)], {})
    state.mark_offset(0, 10)
    key = store.keys.user("default", "u1")
    assert store.write_users([UserWrite("default", "u1", 0, state, new_version=7)]) == [APPLIED]
    before = redis_client.hgetall(key)
    # a zombie that read version 0 cannot overwrite
    assert store.write_users([UserWrite("default", "u1", 0, state)]) == [CONFLICT]
    # nor one that guesses the next number: versions are tokens, not counters
    assert store.write_users([UserWrite("default", "u1", 8, state)]) == [CONFLICT]
    assert redis_client.hgetall(key) == before
    state.mark_offset(0, 11)
    assert store.write_users([UserWrite("default", "u1", 7, state, new_version=9)]) == [APPLIED]
    assert redis_client.hget(key, "v") == b"9"
    assert store.read_users([("default", "u1")])[0][1].offsets == {0: 11}


def test_a_hash_of_an_earlier_version_is_read_and_written_over(store, redis_client):
    """Hashes written before the applied offset was stored once also hold it as ``o:<partition>``: the
    state still reads, the stale field neither blocks nor guards a write."""
    state = folded(store, [click(1, "a", 1_000)], {})
    state.mark_offset(2, 40)
    assert store.write_users([UserWrite("default", "u1", 0, state, new_version=5)]) == [APPLIED]
    key = store.keys.user("default", "u1")
    redis_client.hset(key, "o:2", "40")
    ((version, back),) = store.read_users([("default", "u1")])
    assert (version, back.offsets) == (5, {2: 40})
    back.mark_offset(2, 41)
    assert store.write_users([UserWrite("default", "u1", 5, back, new_version=6)]) == [APPLIED]
    assert store.read_users([("default", "u1")])[0][1].offsets == {2: 41}


def test_user_key_has_ttl_and_delete_removes_it(store, redis_client):
    state = folded(store, [click(1, "a", 1_000)], {})
    store.write_users([UserWrite("shop", "u/1", 0, state)])
    key = store.keys.user("shop", "u/1")
    ttl_ms = redis_client.pttl(key)
    assert 0 < ttl_ms <= store.ttl_ms
    assert store.delete_user("shop", "u/1") is True
    assert redis_client.exists(key) == 0
    assert store.load_user("shop", "u/1") is None
    assert store.delete_user("shop", "u/1") is False


def test_globals_apply_once_per_partition_offset_and_match_memory(store):
    pops = [("a", 1_000_000, 2.0), ("b", 2_000_000, 1.0), ("a", 3_000_000, 8.0)]
    pairs = [("a", "b"), ("b", "c"), ("a", "b")]
    assert store.apply_globals("default", 0, 7, pops, pairs) is True
    assert store.apply_globals("default", 0, 7, pops, pairs) is False  # replayed batch: no double count
    assert store.apply_globals("default", 1, 3, [("c", 3_000_000, 1.0)], []) is True  # other partition

    memory_pop = Popularity(store.config.state.popularity_tau_s)
    for item, ts, w in [*pops, ("c", 3_000_000, 1.0)]:
        memory_pop.add(item, ts, w)
    now = 5_000_000
    np.testing.assert_allclose(store.popularity("default", ["a", "b", "c", "zz"], now),
                               memory_pop.read(["a", "b", "c", "zz"], now), rtol=1e-9)  # fmt: skip
    memory_cv = CoVisitation(store.config.state.covisit_top_m)
    memory_cv.add(pairs)
    for item in "abc":
        assert store.covisit_neighbours("default", item) == memory_cv.neighbours(item)
    assert memory_cv.matrix(["a", "b"], ["b", "c", "a"]).tolist() == [[2.0, 0.0, 0.0], [0.0, 1.0, 2.0]]
    assert store.covisit_occurrences("default", ["a", "b"]).tolist() == [0.0, 0.0]  # pairs alone count no occurrence
    assert store.covisit_matrix("default", ["a", "b"], ["b", "c", "a"]).tolist() == [[2.0, 0.0, 0.0], [0.0, 1.0, 2.0]]


@pytest.mark.config(state={"covisit_top_m": 3})
def test_covisit_rows_are_space_saving_summaries_like_memory(store):
    """Full rows replace their weakest member in Redis exactly as in memory (the offline evaluation's
    co-visitation), call by call, with late events' negative deltas and occurrence counts too."""
    import random

    rng = random.Random(7)
    top_m = store.config.state.covisit_top_m
    memory = CoVisitation(top_m)
    for offset in range(40):
        runs = [(rng.choice("abc"), tuple(f"x{rng.randrange(8)}" for _ in range(rng.randrange(4))),
                 rng.choice([1.0, 1.0, 2.0, -1.0]), f"e{offset}", rng.choice([0.0, 1.0])) for _ in range(3)]  # fmt: skip
        assert store.apply_globals_runs("default", 0, offset, runs) is True
        memory.add_runs(runs)
    names = sorted({*memory.counts, *memory.n})
    for item in names:
        stored = store.covisit_neighbours("default", item)
        assert len(stored) <= top_m
        assert stored == memory.neighbours(item), item
    assert max(len(memory.counts[i]) for i in "abc") == top_m  # rows did fill up
    assert store.covisit_occurrences("default", names).tolist() == memory.occurrences(names).tolist()
    np.testing.assert_allclose(store.covisit_matrix("default", ["a", "b"], ["x1", "x2", "zz"]),
                               memory.cosine_matrix(["a", "b"], ["x1", "x2", "zz"]))  # fmt: skip


def test_popularity_rescales_far_in_the_future(store):
    tau_ms = store.config.state.popularity_tau_s * 1000
    far = int(100 * tau_ms)
    store.apply_globals("default", 0, 1, [("old", 0, 1.0)], [])
    store.apply_globals("default", 0, 2, [("new", far, 1.0)], [])  # exponent 100 > 60: rescale
    pop = store.popularity("default", ["old", "new"], far)
    assert pop[1] == pytest.approx(1.0)
    assert pop[0] == pytest.approx(np.exp(-100.0), rel=1e-6)


def test_tenant_aggregates_leave_the_compact_encoding_with_their_values(store, redis_client):
    """The tenant's popularity zset and occurrences hash (one entry per item) are converted to Redis's hashed
    encodings by the global-deltas script, where an update does not scan every item; nothing else changes:
    the same members and values, no stand-in left behind. A key that is compact again (as an RDB load can
    make it) is converted on the next call."""
    pop_key, counts_key = store.keys.popularity("default"), store.keys.covisit_counts("default")
    redis_client.zadd(pop_key, {"z": 5.0})  # as a restart may leave it: small, compact
    assert redis_client.object("encoding", pop_key) == b"listpack"
    runs = [("b", ("a",), 1.0, "e1", 1.0), ("c", ("a", "b"), 1.0, "e2", 1.0)]
    assert store.apply_globals_runs("default", 0, 1, runs, [("a", 1_000, 2.0), ("b", 2_000, 1.0)]) is True
    assert redis_client.object("encoding", pop_key) == b"skiplist"
    assert redis_client.object("encoding", counts_key) == b"hashtable"
    assert sorted(redis_client.zrange(pop_key, 0, -1)) == [b"a", b"b", b"z"]
    assert redis_client.zscore(pop_key, "z") == 5.0
    assert redis_client.hgetall(counts_key) == {b"b": b"1", b"c": b"1"}
    assert store.covisit_neighbours("default", "a") == {"b": 1.0, "c": 1.0}


def test_items_round_trip_and_request_read(store):
    items = {
        "a": ItemInfo(vector=vec(1), attributes={"category": "jazz", "tags": ["vinyl"]}, text="Jazz vinyl"),
        "b": ItemInfo(vector=None, attributes={}, text="No vector yet"),
    }
    store.put_items("default", items)
    got = store.get_items("default", ["a", "b", "missing"])
    assert set(got) == {"a", "b"}
    np.testing.assert_allclose(got["a"].vector, items["a"].vector)
    assert got["a"].attributes == {"category": "jazz", "tags": ["vinyl"]} and got["b"].vector is None
    assert store.items_with_vectors("default", ["a", "b", "missing"]) == {"a"}

    state = folded(store, [click(1, "a", 1_000)], items)
    store.write_users([UserWrite("default", "u1", 0, state)])
    store.apply_globals("default", 0, 1, [("a", 1_000, 2.0)], [])
    user, found, popularity = store.read_request("default", "u1", ["a", "missing"], now_ms=1_000)
    assert user is not None and user.history == state.history
    assert set(found) == {"a"}
    assert popularity.tolist() == [pytest.approx(2.0), 0.0]
    nobody, _, _ = store.read_request("default", "nobody", [], now_ms=1_000)
    assert nobody is None
