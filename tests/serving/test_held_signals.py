"""Popularity held by the Personalizer (bounded staleness) never mixes scores of two landmarks.

The Personalizer is called directly (no Serve instance), against the session's Redis.
"""

from __future__ import annotations

import asyncio

import numpy as np

from features.redis.keys import KeyLayout
from features.core.personalize import CandidateIn
from serving.personalizer import Personalizer

NOW_MS = 1_900_000_000_000
CANDIDATES = [CandidateIn("a"), CandidateIn("b")]


def _popularity_features(config, writes) -> list[dict[str, float]]:
    """The popularity feature of a, b after each of ``writes`` (callables on the sync client), from one Personalizer."""

    async def encode(text: str, remaining_ms: float):
        raise AssertionError("no text to encode")

    async def main():
        personalizer = Personalizer(config, encode, len, dim=4)
        try:
            out = []
            for write in writes:
                write()
                body = await personalizer.score("shop", "nobody", CANDIDATES, k=None, explain=True, budget_ms=5000,
                                                now_ms=NOW_MS)  # fmt: skip
                assert body.degraded == ["unknown_user"]
                out.append({i.item_id: i.features["popularity"] for i in body.items})
            return out
        finally:
            await personalizer.close()

    return asyncio.run(main())


def test_a_moved_landmark_reads_every_score_again(config, redis_client):
    keys = KeyLayout(config.redis.prefix)
    meta, pop = keys.global_meta("shop"), keys.popularity("shop")
    landmark = NOW_MS / 1000

    def first():
        redis_client.hset(meta, "landmark", landmark)
        redis_client.zadd(pop, {"a": 10.0, "b": 1.0})

    def rescaled():  # what a rescale leaves: every score times exp(-(new - old) / tau), a new landmark
        factor = float(np.exp(-3600 / config.state.popularity_tau_s))
        redis_client.hset(meta, "landmark", landmark + 3600)
        redis_client.zadd(pop, {"a": 10.0 * factor, "b": 100.0 * factor})  # b became popular meanwhile

    before, after = _popularity_features(config, [first, rescaled])
    assert before["a"] == 1.0 and before["b"] < 1.0
    # b's new score was read with the new landmark, and a's held score was not reused beside it
    assert after["b"] == 1.0 and after["a"] < 1.0
