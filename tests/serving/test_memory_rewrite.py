"""Memories on the request path: the consumer folds messages, the Personalizer recalls them into the prompt.

The Personalizer is called directly (no Serve instance): the HTTP layer only passes ``context`` through, so
its answers are checked in their JSON types (``msgspec.to_builtins``: what the API encodes).
"""

from __future__ import annotations

import asyncio
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
