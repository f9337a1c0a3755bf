"""Contract of a user's conversational memories (bounded mentions, near-duplicate texts merged)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from features.core.events import Event
from features.core.memory import MemorySet, MemorySpec, clean_text
from features.core.memory_codec import decode_memories, encode_memories
from tests.features.accumulators.harness import DAY_MS, DIM, Contract

# --- conversational memories ------------------------------------------------------------------------------------
_TEXTS = ["ok", " ok\n", "I adopted a dog named Max", "We moved to Lisbon", "thanks!", "I love pottery"]
_VECTORS = {t: np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
            for i, t in enumerate(dict.fromkeys(_TEXTS + [clean_text(t, 480) for t in _TEXTS]))}  # fmt: skip
_memory_obs = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 60 * DAY_MS), st.sampled_from(_TEXTS),
                                 st.sampled_from(["user", "assistant"])),
                       min_size=1, max_size=25, unique_by=lambda o: o[0])  # fmt: skip


def _message(n: int, ts: int, text: str, role: str) -> Event:
    return Event(event_id=f"e{n}", user_id="u", type="message", ts_ms=ts, text=text, session_id="s",
                 context={"role": role})  # fmt: skip


def _memory_read(memories: MemorySet, observations: list) -> Any:
    return [(m.role, m.text, tuple(m.mentions), m.vector) for m in memories.memories()]


def _memory_bounds(memories: MemorySet, observations: list) -> None:
    assert memories.mentions == min(memories.spec.max_mentions, len(observations))
    kept = [m for memory in memories.memories() for m in memory.mentions]
    assert len(kept) == memories.mentions and all(memory.mentions for memory in memories.memories())
    assert all(m.event_id in memories for m in kept)


def _memory_codec(memories: MemorySet) -> MemorySet:
    return decode_memories(encode_memories(memories, "f2"), memories.spec, DIM)


MEMORIES = Contract(
    name="conversational memories", observations=_memory_obs,
    new=lambda bounded: MemorySet(MemorySpec(max_mentions=3 if bounded else 1000), DIM),
    fold=lambda memories, batch: memories.fold([_message(*o) for o in batch], _VECTORS) and None,
    read=_memory_read, check_bounds=_memory_bounds, replay="idempotent", order_when_bounded=True,
    codec=_memory_codec, codec_vector_rel=2e-3,
)  # fmt: skip
