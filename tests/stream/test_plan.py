"""The fold plan alone (no Redis, no Kafka): what a partition of a poll writes, and which offsets its deltas carry."""

from __future__ import annotations

import numpy as np

from features.core.events import Event
from features.core.state import ItemInfo, StateSpec, UserState
from p13n.config import StateConfig
from stream.plan import fresh_events, plan_partition

SPEC = StateSpec.from_config(StateConfig(), dim=2)
ITEMS = {f"i{n}": ItemInfo(vector=np.array([1.0, float(n)], np.float32)) for n in range(6)}
KEY = ("shop", "u", 3)


def click(n: int, item: str, event_id: str | None = None) -> Event:
    return Event(event_id=event_id or f"e{n}", user_id="u", tenant="shop", type="click", ts_ms=1_000 * n, item_id=item)


def plan(events, state=None, version=0, global_offset=-1):
    return plan_partition([KEY], [(version, state)], {KEY: events}, ITEMS, {}, spec=SPEC, now_ms=10_000,
                          global_offset=global_offset, tokens=lambda n: list(range(100, 100 + n)))  # fmt: skip


def test_a_redelivery_is_skipped_by_the_offset_stored_in_the_state():
    first = plan([(10, click(1, "i1")), (11, click(2, "i2"))])
    (written,) = first.writes
    state = written.state
    assert state.offsets == {3: 11} and written.stats.applied == 2
    again = plan([(10, click(1, "i1")), (11, click(2, "i2"))], state, version=100)
    assert (again.writes, again.deltas, again.duplicates) == ([], [], 2)
    assert again.untouched == [(KEY, 100, state)]
    mixed = plan([(11, click(2, "i2")), (12, click(3, "i3"))], state, version=100)
    (written,) = mixed.writes
    assert (written.expected_version, written.stats.applied, written.stats.duplicates) == (100, 1, 1)
    assert state.offsets == {3: 12} and state.events_applied == 3


def test_global_deltas_carry_the_offsets_their_events_came_with():
    events = [(7, click(3, "i3")), (5, click(1, "i1")), (6, click(2, "i2")), (9, click(4, "i4"))]
    result = plan(events, global_offset=5)
    by_offset = {offset: (pops, runs) for offset, pops, runs in result.deltas}
    assert sorted(by_offset) == [6, 7, 9]  # 5 is at the global applied offset: its deltas were applied
    item_at = {offset: e.item_id for offset, e in events}
    for offset, (pops, runs) in by_offset.items():
        assert [p.item_id for p in pops] == [item_at[offset]]
        assert all(d.source == offset for d in [*pops, *runs])
        assert {run.later for run in runs if run.count} == {item_at[offset]}
    # the same events folded without offsets give the same deltas, tagged by event id
    plain = UserState.new(SPEC).fold([e for _, e in sorted(events)], ITEMS)
    assert sorted((p.item_id, p.ts_ms, p.weight) for p in plain.popularity) == sorted(
        (p.item_id, p.ts_ms, p.weight) for _, pops, _ in plan(events).deltas for p in pops)  # fmt: skip


def test_of_producer_duplicates_the_first_offset_is_the_one_applied():
    result = plan([(8, click(1, "i1", event_id="dup")), (4, click(1, "i1", event_id="dup"))])
    (written,) = result.writes
    assert (written.stats.applied, written.stats.duplicates) == (1, 1)
    assert [offset for offset, _, _ in result.deltas] == [4]
    assert written.state.offsets == {3: 8}


def test_fresh_events_are_those_above_the_applied_offset_in_offset_order():
    assert fresh_events([(4, "a")], 4) == []
    assert fresh_events([(9, "c"), (2, "a"), (5, "b")], 2) == [(5, "b"), (9, "c")]
