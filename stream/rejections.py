"""Script calls Redis refused (``ResponseError``): retried, then split until the records at fault are
found; those become dead letters (``store_rejected``, the Redis message in the detail), the rest is applied.

A global-deltas call that fails wrote nothing (:data:`~features.redis.scripts.APPLY_GLOBALS` checks every
number before its first write), but calls after it on the same partition did run and raised the
partition's global offset past it. So it is repaired with *forced* calls (no offset check, the
offset only rises): first the whole call again (a transient refusal, e.g. out of memory, passes),
then event by event. A user write that fails is re-folded like a conflict; failing again, that
user's records of the batch are dead-lettered.

Limit: the user states of a refused global call's events were written, so a crash between the
refusal and its repair leaves those events' popularity/co-visitation unapplied (the replay finds
their users already applied).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from features.redis.store import RedisStore
from stream.records import DeadLetter, Record

__all__ = ["STORE_REJECTED", "GlobalCall", "repair_global_call", "user_rejected"]

log = logging.getLogger("p13n.consume")

#: Dead-letter reason of a record whose writes Redis refused, retried and isolated.
STORE_REJECTED = "store_rejected"

#: A sent global-deltas call: its position in the batch, tenant, partition and per-event deltas
#: ``[(offset, popularity, co-visit runs), …]`` in offset order.
GlobalCall = tuple[int, str, int, list[tuple[int, list, list]]]


def _forced(store: RedisStore, tenant: str, partition: int, events: Sequence[tuple[int, list, list]]) -> Exception | None:
    """Apply ``events``' deltas in one forced call; the error Redis answered, or None."""
    pops = [d for _, event_pops, _ in events for d in event_pops]
    runs = [r for _, _, event_runs in events for r in event_runs]
    with store.begin_writes() as batch:
        batch.send([store.globals_call(tenant, partition, events[-1][0], pops, runs, force=True)])
        reply = batch.finish(raise_on_error=False)[0]
    return reply if isinstance(reply, Exception) else None


def repair_global_call(store: RedisStore, call: GlobalCall, error: Exception,
                       record_at: Callable[[int, int], Record]) -> list[DeadLetter]:  # fmt: skip
    """Re-apply a refused global-deltas ``call``: whole, then event by event; returns the dead letters
    of the events Redis refused alone (``record_at(partition, offset)`` gives an event's record)."""
    _, tenant, partition, events = call
    log.warning("Redis refused the global deltas of %s partition %d offsets %d-%d (%s); retrying", tenant, partition,
                events[0][0], events[-1][0], error)  # fmt: skip
    if _forced(store, tenant, partition, events) is None:
        return []
    letters = []
    for event in events:
        refused = _forced(store, tenant, partition, [event])
        if refused is not None:
            log.warning("dead-lettering %s partition %d offset %d: %s", tenant, partition, event[0], refused)
            letters.append(DeadLetter(record_at(partition, event[0]), STORE_REJECTED,
                                      f"Redis refused its popularity/co-visitation update: {refused}"))  # fmt: skip
    return letters


def user_rejected(record: Record, error: str) -> DeadLetter:
    """The dead letter of a record whose user's state write Redis refused twice."""
    return DeadLetter(record, STORE_REJECTED, f"Redis refused the user's state write: {error}")
