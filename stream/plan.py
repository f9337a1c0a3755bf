"""The fold plan: what one partition of a poll writes, computed without I/O.

Given the users' states as read (with the version each was read at) and the partition's global
applied offset, :func:`plan_partition` decides everything Redis will be asked to do:

- per user, the events above the user's applied offset (``UserState.offsets``, stored in the state
  itself), folded in event time; the state marks its new applied offset and becomes a
  compare-and-set write guarded by the version read (the writer sends it as a
  :class:`~features.redis.store.UserWrite`);
- per event above the partition's global applied offset, its popularity and co-visitation deltas,
  keyed by the event's offset: the fold is given each event's offset as its tag, so every delta
  comes out carrying the offset it came with (:attr:`features.core.history.PopularityDelta.source`);
- users with nothing new stay as they were read.

Nothing here reads a clock, Redis or Kafka (the ``plan`` contract in ``pyproject.toml`` keeps it so);
new version tokens come from ``tokens``.

>>> from features.core.events import Event
>>> from features.core.state import StateSpec
>>> from p13n.config import StateConfig
>>> spec = StateSpec.from_config(StateConfig(), dim=2)
>>> state = UserState.new(spec); state.mark_offset(3, 10)
>>> click = lambda n: Event(event_id=f"e{n}", user_id="u", type="click", ts_ms=n, item_id="i")
>>> plan = plan_partition([("t", "u", 3)], [(7, state)], {("t", "u", 3): [(10, click(1)), (11, click(2))]},
...                       {}, {}, spec=spec, now_ms=20, global_offset=-1, tokens=lambda n: [99] * n)
>>> [(p.expected_version, p.new_version, p.stats.applied, p.stats.duplicates) for p in plan.writes]
[(7, 99, 1, 1)]
>>> state.offsets, [offset for offset, _, _ in plan.deltas]
({3: 11}, [11])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from features.core.memory import MemorySet, MemorySpec
from features.core.state import FoldResult, ItemInfo, StateSpec, UserState, fold_users
from stream.intake import AtOffset, UserKey
from stream.records import by_offset

__all__ = ["WriteStats", "PlannedWrite", "GlobalDelta", "PartitionPlan", "fresh_events", "plan_partition"]

#: One event's global deltas: (offset, popularity deltas, co-visitation runs).
GlobalDelta = tuple[int, list, list]


class WriteStats(NamedTuple):
    """What a user's write counts once Redis applied it."""

    applied: int
    duplicates: int
    freshness_s: list[float]


class PlannedWrite(NamedTuple):
    """A user's folded state, to be written if the user is still at ``expected_version`` (0: no state)."""

    key: UserKey
    expected_version: int
    new_version: int
    state: UserState
    stats: WriteStats


@dataclass
class PartitionPlan:
    writes: list[PlannedWrite] = field(default_factory=list)
    #: Per event above the partition's global applied offset that has any: its global deltas.
    deltas: list[GlobalDelta] = field(default_factory=list)
    #: Users with nothing above their applied offset: (key, version, state) as read.
    untouched: list[tuple[UserKey, int, UserState]] = field(default_factory=list)
    #: Events at or below their user's applied offset (re-deliveries).
    duplicates: int = 0


def fresh_events(events: list[AtOffset], applied_offset: int) -> list[AtOffset]:
    """``events`` above ``applied_offset``, in offset order.

    >>> fresh_events([(5, "b"), (3, "a"), (4, "c")], 3)
    [(4, 'c'), (5, 'b')]
    """
    if len(events) == 1:  # the usual case
        return events if events[0][0] > applied_offset else []
    return sorted([pair for pair in events if pair[0] > applied_offset], key=by_offset)


def plan_partition(keys: Sequence[UserKey], reads: Sequence[tuple[int, UserState | None]],
                   groups: Mapping[UserKey, list[AtOffset]], items: Mapping[str, ItemInfo],
                   text_vectors: Mapping[str, np.ndarray], *, spec: StateSpec, now_ms: int, global_offset: int,
                   tokens: Callable[[int], list[int]], memory_spec: MemorySpec | None = None) -> PartitionPlan:  # fmt: skip
    """Fold the users ``keys`` (all of one tenant and partition; ``items`` are that tenant's) on their
    ``reads`` ((version, state or None)); their states are updated in place. ``tokens(n)`` gives n new
    version tokens (:func:`features.redis.store.new_version_tokens`). ``memory_spec``: memories are on (a
    user's ``memories`` must be loaded when it has new messages)."""
    plan = PartitionPlan()
    jobs: list[tuple[UserKey, int, UserState, list[AtOffset], int]] = []
    for key, (version, state) in zip(keys, reads):
        state = state or UserState.new(spec)
        received = groups[key]
        fresh = fresh_events(received, state.offsets.get(key[2], -1))
        if fresh:
            jobs.append((key, version, state, fresh, len(received)))
        else:
            plan.duplicates += len(received)
            plan.untouched.append((key, version, state))
    results = fold_users([(state, [e for _, e in fresh], [o for o, _ in fresh]) for _, _, state, fresh, _ in jobs],
                         items, text_vectors)  # fmt: skip
    if memory_spec is not None:
        _fold_memories(jobs, text_vectors, memory_spec, spec.dim)
    for (key, version, state, fresh, received), result, token in zip(jobs, results, tokens(len(jobs))):
        state.mark_offset(key[2], fresh[-1][0])
        stats = WriteStats(result.applied, received - len(fresh) + result.duplicates,
                           [(now_ms - e.ts_ms) / 1000.0 for _, e in fresh])  # fmt: skip
        plan.writes.append(PlannedWrite(key, version, token, state, stats))
        plan.deltas.extend(_global_deltas(result, fresh, global_offset))
    return plan


def _fold_memories(jobs, text_vectors: Mapping[str, np.ndarray], memory_spec: MemorySpec, dim: int) -> None:
    for _, _, state, fresh, _ in jobs:
        messages = [e for _, e in fresh if e.type == "message"]
        if messages:
            if state.memories is None:  # a new user: nothing stored
                state.memories = MemorySet(memory_spec, dim)
            state.memories.fold(messages, text_vectors)


def _global_deltas(result: FoldResult, fresh: list[AtOffset], global_offset: int) -> list[GlobalDelta]:
    """Per offset above ``global_offset``: the popularity and co-visitation deltas its event caused
    (each delta's ``source`` is its event's offset)."""
    if not (result.popularity or result.covisit_runs):
        return []
    if len(fresh) == 1:  # the usual case: one event, one offset
        offset = fresh[0][0]
        return [(offset, result.popularity, result.covisit_runs)] if offset > global_offset else []
    by_source: dict[int, tuple[list, list]] = {}
    for n, part in enumerate((result.popularity, result.covisit_runs)):
        for d in part:
            offset = d.source
            if offset > global_offset:
                slot = by_source.get(offset)  # not setdefault: that builds two lists per delta
                if slot is None:
                    slot = by_source[offset] = ([], [])
                slot[n].append(d)
    return [(offset, pops, runs) for offset, (pops, runs) in by_source.items()]
