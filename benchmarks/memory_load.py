"""The ``memories`` step of ``p13n bench load``: ``/v1/rewrite`` for users who each hold ~500 memories.

Issue 14's load profile. Each seeded user's memories are the turns of a generated conversation
(:mod:`features.datasets.conversations`) made distinct (a turn index appended, so none merge — the worst case
for the bound), shifted to end now, published to Kafka as ``message`` events and folded by the
running consumer (the consumer's encoder embeds every turn: seeding 20 users × 500 turns takes about
as long as the encoder needs for 10,000 texts). The questions are the conversations' own ``qa``
questions, so retrieval has real work to do. Targets: rewrite p99 ≤ 30 ms at 100 req/s and the
``memory`` stage's p99 ≤ 5 ms (server ``timings_ms``).
"""

from __future__ import annotations

from benchmarks.loadgen import run_open_loop

__all__ = ["MemoryUsers", "seed_memory_users", "run_memory_step"]


class MemoryUsers:
    """Users seeded with memories, and the questions to ask them."""

    def __init__(self, users: list[str], questions: list[list[str]], memories_per_user: int) -> None:
        self.users, self.questions, self.memories_per_user = users, questions, memories_per_user

    def rewrite_body(self, n: int) -> dict:
        i = n % len(self.users)
        asked = self.questions[i]
        return {"user_id": self.users[i], "messages": [{"role": "user", "content": asked[(n // len(self.users)) % len(asked)]}]}


def seed_memory_users(config, *, users: int = 20, memories: int = 500, tenant: str = "demo",
                      timeout_s: float = 900, progress=lambda text: None) -> MemoryUsers:  # fmt: skip
    """Publish ``users`` conversations of ``memories`` distinct turns each through Kafka; wait for the fold."""
    from features.datasets.conversations import generate_conversation
    from features.evaluation.memory_recall import conversation_events
    from features.datasets.synthetic import SyntheticData
    from p13n.clock import now_ms
    from p13n.seeding import publish, run_id, wait_folded

    run = run_id()
    end = now_ms() - 60_000
    events: list[dict] = []
    ids, questions = [], []
    for u in range(users):
        user_id = f"mem{run}-user-{u:03d}"
        conv = generate_conversation(seed=run + u, sessions=max(2, memories // 30 + 1), turns_per_session=30)
        turns = conversation_events(conv, user_id)[:memories]
        shift = end - turns[-1].ts_ms
        for n, turn in enumerate(turns):
            events.append({"event_id": f"{user_id}-{turn.event_id}", "user_id": user_id, "tenant": tenant, "type": "message",
                           "timestamp": turn.ts_ms + shift, "session_id": turn.session_id, "text": f"{turn.text} ({n})"})  # fmt: skip
        ids.append(user_id)
        questions.append([q["question"] for q in conv["qa"]] or ["What did we talk about?"])
    data = SyntheticData(items=[], events=events)
    progress(f"publishing {len(events):,} message events of {users} users")
    publish(config, data)
    progress("waiting for the consumer to fold (and embed) them")
    wait_folded(config, data, timeout_s=timeout_s)
    return MemoryUsers(ids, questions, memories)


async def run_memory_step(url: str, headers: dict[str, str], seeded: MemoryUsers, *, rate: float, seconds: float,
                          arrivals: str = "poisson", seed: int = 0) -> dict:  # fmt: skip
    """Open-loop ``/v1/rewrite`` at ``rate`` for the seeded users; the loadgen summary plus the seeding's shape."""
    result = await run_open_loop(url + "/v1/rewrite", seeded.rewrite_body, rate=rate, duration_s=seconds, headers=headers,
                                 arrivals=arrivals, seed=seed)  # fmt: skip
    return {**result.summary(), "users": len(seeded.users), "memories_per_user": seeded.memories_per_user}
