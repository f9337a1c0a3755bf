"""Memories on the request path: the consumer folds messages, the Personalizer recalls them into the prompt.

The Personalizer is called directly (no Serve instance): the HTTP layer only passes ``context`` through, so
its answers are checked in their JSON types (``msgspec.to_builtins``: what the API encodes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random

import msgspec
import pytest

from features.encoder.runtime import Encoder, default_encoder_dir
from features.redis.store import RedisStore
from serving.personalizer import Personalizer
from stream.processing import BatchProcessor, records_from_lines
from tests.serving.reference import context_for

NOW_MS = 1_900_000_000_000
DAY = 86_400_000
FACT = "We adopted a beagle puppy from the shelter and named him Biscuit"


def _lines(user: str, distractors: int = 500) -> list[bytes]:
    rng = random.Random(2)
    subjects = ["work", "the weather", "dinner", "my commute", "a podcast", "the gym", "my phone", "a movie"]
    moods = ["was fine", "drove me crazy", "was surprisingly fun", "took forever", "was lovely"]
    texts = [f"{rng.choice(subjects)} {rng.choice(moods)} today ({i})" for i in range(distractors)]
    texts.insert(distractors // 3, FACT)
    events = [{"event_id": f"t{i}", "user_id": user, "type": "message", "text": text, "session_id": f"s{i // 40}",
               "timestamp": NOW_MS - 60 * DAY + i * 2 * 3_600_000} for i, text in enumerate(texts)]  # fmt: skip
    events.append({"event_id": "v1", "user_id": user, "type": "view", "item_id": "i1", "item_text": "a dog leash",
                   "timestamp": NOW_MS - DAY})  # fmt: skip
    return [json.dumps(e).encode() for e in events]


@pytest.fixture
def talker(redis_client, config, consumer_encoder) -> RedisStore:
    store = RedisStore(redis_client, config, dim=consumer_encoder.dimension)
    processor = BatchProcessor(store, config, consumer_encoder.encode, clock_ms=lambda: NOW_MS)
    records = records_from_lines(_lines("talker"), "events")
    for start in range(0, len(records), 100):
        outcome = processor.process_events(records[start : start + 100])
        assert not outcome.dead_letters
    return store


def _run(config, coroutine_of):
    encoder = Encoder.from_directory(default_encoder_dir())

    async def encode(text: str, remaining_ms: float):
        return encoder.encode([text])[0]

    async def main():
        personalizer = Personalizer(config, encode, encoder.count_tokens, dim=encoder.dimension)
        try:
            return msgspec.to_builtins(await coroutine_of(personalizer))
        finally:
            await personalizer.close()

    return asyncio.run(main()), encoder


def test_a_rewrite_recalls_a_stated_fact_among_many_distractors(talker, config):
    question = "What's the name of my dog?"
    body, encoder = _run(config, lambda p: p.rewrite("default", "talker", [{"role": "user", "content": question}],
                                                     max_tokens=256, budget_ms=2000, now_ms=NOW_MS))  # fmt: skip
    assert body["degraded"] == [], body["degraded"]
    memories = body["context"]["memories"]
    assert "t166" in [i for m in memories for i in m["event_ids"]]
    assert set(memories[0]) == {"event_id", "event_ids", "text", "timestamp", "score"}
    assert [m["timestamp"] for m in memories] == sorted(m["timestamp"] for m in memories)  # the order in the prompt
    block = body["messages"][0]["content"]
    assert body["messages"][0]["role"] == "system" and "Biscuit" in block
    assert encoder.count_tokens(block) <= 256 and "memory" in body["timings_ms"]
    direct, _ = context_for(talker, "default", "talker", now_ms=NOW_MS, max_tokens=256, count_tokens=encoder.count_tokens,
                            query_vector=encoder.encode([question])[0], query=question)  # fmt: skip
    assert [m["event_ids"] for m in direct.memories] == [m["event_ids"] for m in memories]


def test_memories_are_skipped_when_the_budget_is_short(talker, config):
    messages = [{"role": "user", "content": "What's the name of my dog?"}]
    body, _ = _run(config, lambda p: p.rewrite("default", "talker", messages, max_tokens=60, budget_ms=2000,
                                               now_ms=NOW_MS))  # fmt: skip
    assert "memory_skipped" in body["degraded"] and body["context"]["memories"] == []


def test_the_profile_lists_the_latest_memories_and_delete_removes_them(talker, config):
    async def both(p):
        profile = await p.profile("default", "talker", now_ms=NOW_MS)
        deleted = await p.delete("default", "talker")
        return profile, deleted, await p.profile("default", "talker", now_ms=NOW_MS)

    (profile, deleted, after), _ = _run(config, both)
    latest = profile["memories"]
    assert len(latest) == 20 and latest[0]["event_id"] == "t500" and latest[1]["event_id"] == "t499"
    assert deleted and after is None
    assert not talker.client.exists(talker.keys.user("default", "talker"))


def _fold(store: RedisStore, config, encoder, events: list[dict]) -> None:
    """Fold ``events`` as records after the ``talker`` fixture's (offsets from 10,000 on)."""
    processor = BatchProcessor(store, config, encoder.encode, clock_ms=lambda: NOW_MS)
    records = records_from_lines([json.dumps(e).encode() for e in events], "events")
    outcome = processor.process_events([dataclasses.replace(r, offset=r.offset + 10_000) for r in records])
    assert not outcome.dead_letters


def _recalled(body: dict) -> list[str]:
    return [i for m in body["context"]["memories"] for i in m["event_ids"]]


def test_decoded_memories_are_reused_until_a_write_changes_them(talker, config, consumer_encoder):
    """The blob is read once per token: bytes changed behind the token are not read again, a folded message is."""
    key = talker.keys.user("default", "talker")
    sister = [{"role": "user", "content": "Where did my sister Olga move to?"}]
    dog = [{"role": "user", "content": "What's the name of my dog?"}]

    async def steps(p):
        first = await p.rewrite("default", "talker", dog, max_tokens=256, budget_ms=2000, now_ms=NOW_MS)
        token, stored = talker.client.hmget(key, "mv", "m")
        talker.client.hset(key, "m", b"not a memories blob")  # not how anything writes: shows the blob is not re-read
        cached = await p.rewrite("default", "talker", dog, max_tokens=256, budget_ms=2000, now_ms=NOW_MS)
        talker.client.hset(key, "m", stored)  # the consumer folds onto what is stored
        _fold(talker, config, consumer_encoder, [
            {"event_id": "n1", "user_id": "talker", "type": "message", "session_id": "s99",
             "text": "My sister Olga moved to Lisbon last spring", "timestamp": NOW_MS - DAY // 2}])  # fmt: skip
        after = await p.rewrite("default", "talker", sister, max_tokens=256, budget_ms=2000, now_ms=NOW_MS)
        return first, token, cached, after

    (first, token, cached, after), _ = _run(config, steps)
    assert token is not None and "t166" in _recalled(first)
    assert cached["context"]["memories"] == first["context"]["memories"] and cached["degraded"] == []
    assert talker.client.hget(key, "mv") != token
    assert "n1" in _recalled(after) and after["degraded"] == [], after["degraded"]


def test_no_memory_is_served_after_the_user_is_deleted_elsewhere(talker, config, consumer_encoder):
    """Deleted by another replica (this one keeps its decoded copy) and re-created: no old memory recalled."""
    dog = [{"role": "user", "content": "What's the name of my dog?"}]

    async def steps(p):
        before = await p.rewrite("default", "talker", dog, max_tokens=256, budget_ms=2000, now_ms=NOW_MS)
        assert talker.delete_user("default", "talker")
        _fold(talker, config, consumer_encoder, [
            {"event_id": "w1", "user_id": "talker", "type": "view", "item_id": "i1", "timestamp": NOW_MS - 1000},
            {"event_id": "w2", "user_id": "talker", "type": "message", "text": "I would like a cat one day",
             "timestamp": NOW_MS - 500}])  # fmt: skip
        after = await p.rewrite("default", "talker", dog, max_tokens=256, budget_ms=2000, now_ms=NOW_MS)
        return before, after

    (before, after), _ = _run(config, steps)
    assert "t166" in _recalled(before)
    assert _recalled(after) in ([], ["w2"]) and "Biscuit" not in json.dumps(after["messages"])
    assert after["context"]["history"] and "unknown_user" not in after["degraded"]
