"""Reference: a clean in-memory replay of events, and a comparison with what a consumer left in Redis."""

from __future__ import annotations

import heapq
import json
from collections import defaultdict

import numpy as np
import pytest

from features.core.events import Event, Rejection, parse_event
from features.core.signals import CoVisitation, Popularity
from features.core.memory import MemorySet
from features.core.state import UserState
from features.datasets.synthetic import SyntheticSpec, generate
from features.redis.store import RedisStore
from stream.processing import records_from_lines as records_for  # noqa: F401 (re-exported for tests)

NOW_MS = 1_900_000_000_000


def two_tenant_lines(users: int, per_user: int, seed: int) -> list[bytes]:
    """Synthetic events of two tenants whose item ids (and user ids) are the same but whose item texts
    differ (another seed), interleaved in time: a consumer that mixes the tenants' items up folds the
    other tenant's vectors and differs from :func:`assert_matches_replay`."""
    tenants = [generate(SyntheticSpec(users=users, events_per_user=per_user, seed=seed + n, tenant=tenant))
               for n, tenant in enumerate(("default", "acme"))]  # fmt: skip
    texts = [{i["item_id"]: i["text"] for i in data.items} for data in tenants]
    assert sum(texts[0][i] != texts[1][i] for i in texts[0]) > len(texts[0]) // 2, "the tenants' item texts must differ"
    merged = heapq.merge(*(data.events for data in tenants), key=lambda e: e["timestamp"])  # keeps each one's disorder
    return [json.dumps(e).encode() for e in merged]


def valid_events(lines: list[bytes]) -> list[Event]:
    parsed = [parse_event(raw, now_ms=NOW_MS) for raw in lines]
    return [e for e in parsed if not isinstance(e, Rejection)]


def assert_matches_replay(store: RedisStore, events: list[Event], encode) -> None:
    """Redis (users and globals) equals a single in-memory fold of ``events``."""
    by_user: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in events:
        by_user[(e.tenant, e.user_id)].append(e)
    tenants = {t for t, _ in by_user}
    item_ids = sorted({e.item_id for e in events if e.item_id})
    items = {tenant: store.get_items(tenant, item_ids) for tenant in tenants}  # items are per tenant
    phrases = sorted({e.text for e in events if e.text and e.type in ("message", "preference")})
    text_vectors = dict(zip(phrases, encode(phrases))) if phrases else {}
    popularity = {t: Popularity(store.config.state.popularity_tau_s) for t in tenants}
    covisits = {t: CoVisitation(store.config.state.covisit_top_m) for t in tenants}
    keys = sorted(by_user)
    stored = store.read_users(keys)
    for (tenant, user_id), (_, actual) in zip(keys, stored):
        expected = UserState.new(store.spec)
        result = expected.fold(sorted(by_user[(tenant, user_id)], key=lambda e: e.ts_ms), items[tenant], text_vectors)
        for d in result.popularity:
            popularity[tenant].add(d.item_id, d.ts_ms, d.weight)
        covisits[tenant].add(result.covisits)
        assert actual is not None, f"user {tenant}/{user_id} missing"
        now = NOW_MS
        for h in store.spec.horizon_names:
            np.testing.assert_allclose(actual.embeddings(now)[h], expected.embeddings(now)[h], rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(actual.negative_embedding(now), expected.negative_embedding(now), atol=2e-3)
        np.testing.assert_allclose(actual.text_embedding(now), expected.text_embedding(now), atol=2e-3)
        assert actual.history == expected.history, (tenant, user_id)
        assert [p.text for p in actual.preferences] == [p.text for p in expected.preferences]
        assert actual.events_applied == expected.events_applied, (tenant, user_id)
        for mine, theirs in ((actual.attribute_preferences(now), expected.attribute_preferences(now)),
                             (actual.event_counts(now), expected.event_counts(now))):  # fmt: skip
            assert mine.keys() == theirs.keys()
            for k in mine:
                assert mine[k] == pytest.approx(theirs[k], rel=1e-6, abs=1e-9), k
    assert_memories_match(store, by_user, encode)
    for tenant in tenants:
        np.testing.assert_allclose(store.popularity(tenant, item_ids, NOW_MS), popularity[tenant].read(item_ids, NOW_MS),
                                   rtol=1e-9, atol=1e-12)  # fmt: skip
        for item in item_ids:
            want = {k: v for k, v in covisits[tenant].neighbours(item).items() if v}
            got = {k: v for k, v in store.covisit_neighbours(tenant, item).items() if v}
            assert got == want, (tenant, item)


def assert_memories_match(store: RedisStore, by_user: dict[tuple[str, str], list[Event]], encode) -> None:
    """Each user's stored memories equal one in-memory fold of their message events (vectors to int8 rounding)."""
    keys = sorted(by_user)
    for (tenant, user_id), actual in zip(keys, store.read_memories(keys)):
        expected = MemorySet(store.memory_spec, store.dim)
        texts = expected.texts_to_embed(by_user[(tenant, user_id)])
        expected.fold(by_user[(tenant, user_id)], dict(zip(texts, encode(texts))) if texts else {})
        got, want = actual.memories(), expected.memories()
        assert [(m.text, m.role, m.mentions) for m in got] == [(m.text, m.role, m.mentions) for m in want], user_id
        for a, b in zip(got, want):
            assert float(a.vector @ b.vector) > 0.99
