"""A user's bounded history in event-time order, and the global-signal deltas it gives rise to.

Each positive interaction raises its item's popularity and pairs the item with its
neighbours in the history (co-visitation). Neighbours are defined in *event-time* order,
so a late event that lands between two remembered ones adds its own pairs and removes
the pair it pushes apart: the counts depend on which events were seen, not on the order
they arrived in.

>>> history: list[HistoryEntry] = []
>>> runs: list[CovisitRun] = []
>>> for ts, item in [(1, "a"), (2, "b"), (3, "c")]:
...     entry = HistoryEntry(ts, item, "click")
...     collect_covisits(history, entry, f"e{ts}", runs, window=1, history_size=10)
...     add_history(history, entry, size=10)
>>> [(r.later, list(r.earlier), r.delta, r.count) for r in runs]
[('a', [], 1.0, 1.0), ('b', ['a'], 1.0, 1.0), ('c', ['b'], 1.0, 1.0)]
>>> late = HistoryEntry(2, "x", "click")   # between b and c, one event late
>>> collect_covisits(history, late, "e9", runs := [], window=1, history_size=10)
>>> sorted((r.later, tuple(r.earlier), r.delta, r.count) for r in runs)
[('c', ('b',), -1.0, 0.0), ('c', ('x',), 1.0, 0.0), ('x', (), 0.0, 1.0), ('x', ('b',), 1.0, 0.0)]

Each event that takes part also counts one occurrence of its item (``count``): the ``n(i)``
of the cosine normalisation ``c(a, b) / sqrt(n(a)·n(b))`` (:mod:`features.core.signals`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import NamedTuple

from p13n.vocabulary import NEGATIVE_TYPES  # re-exported: the fold and the prompt import it from here

__all__ = [
    "NEGATIVE_TYPES",
    "HistoryEntry",
    "PopularityDelta",
    "CovisitDelta",
    "CovisitRun",
    "collect_covisits",
    "add_history",
]


#: Builds a NamedTuple from a tuple of its fields without the Python-level ``__new__`` that
#: ``typing.NamedTuple`` generates — the fold makes several per event.
new_tuple = tuple.__new__


class HistoryEntry(NamedTuple):
    """One remembered interaction; tuples order by (time, item, type) — the event-time order."""

    ts_ms: int
    item_id: str
    type: str


class PopularityDelta(NamedTuple):
    item_id: str
    ts_ms: int
    weight: float
    #: The event that caused it: its ``event_id``, or the tag it was folded with (the consumer folds
    #: each event with its Kafka offset, so the delta carries the offset it came with).
    source: str | int

    @property
    def event_id(self) -> str | int:
        """:attr:`source` (the event id, when the fold had no tags)."""
        return self.source


class CovisitDelta(NamedTuple):
    earlier: str
    later: str
    delta: float  # +1 a new neighbour pair, -1 a pair pushed apart by a late event in between
    source: str | int  # as PopularityDelta.source

    @property
    def event_id(self) -> str | int:
        """:attr:`source` (the event id, when the fold had no tags)."""
        return self.source


class CovisitRun(NamedTuple):
    """Co-visitation deltas of one event in one object: ``(e, later, delta)`` for each ``e`` in
    ``earlier`` — the usual case is an item and the items before it (one object per event
    instead of one per pair; the consumer sends them on as they are) — and ``count``, the
    occurrences ``later`` gains (1 for the run of the event that brings the item, else 0)."""

    later: str
    earlier: Sequence[str]
    delta: float
    source: str | int  # as PopularityDelta.source
    count: float

    @property
    def event_id(self) -> str | int:
        """:attr:`source` (the event id, when the fold had no tags)."""
        return self.source


def collect_covisits(history: list[HistoryEntry], entry: HistoryEntry, source: str | int, out: list[CovisitRun], *,
                     window: int, history_size: int) -> None:
    """Co-visitation deltas of inserting ``entry`` into the history, order-independently.

    Two items are neighbours when at most ``window`` items separate them in *event-time*
    order (items of dislike/skip events are left out: they neither pair nor count). Inserting an item adds its pairs with the
    ``window`` items before and after it, and removes each pair that it now pushes
    more than ``window`` apart — so the counts depend on which events were seen, not
    on the order they arrived in (up to items already evicted from the bounded history).
    Each run carries ``source``, the event's id or tag (:attr:`PopularityDelta.source`).
    """
    item = entry.item_id
    if len(history) >= history_size and history and entry < history[0]:
        out.append(new_tuple(CovisitRun, (item, (), 0.0, source, 1.0)))
        return  # older than everything we still remember: its neighbours are gone (it still occurred)
    if not history or entry >= history[-1]:  # in order (the usual case): the last positives precede it
        earlier: list[str] = []
        found = 0
        for _, other, kind in reversed(history):
            if kind not in NEGATIVE_TYPES:
                if other != item:
                    earlier.append(other)
                found += 1
                if found == window:
                    break
        earlier.reverse()  # in event-time order
        out.append(new_tuple(CovisitRun, (item, earlier, 1.0, source, 1.0)))
        return
    positives = [h for h in history if h.type not in NEGATIVE_TYPES]
    p = bisect.bisect_right(positives, entry)
    before = positives[max(0, p - window) : p]
    after = positives[p : p + window]
    out.append(new_tuple(CovisitRun, (item, (), 0.0, source, 1.0)))
    for other in before:
        if other.item_id != item:
            out.append(new_tuple(CovisitRun, (item, (other.item_id,), 1.0, source, 0.0)))
    for other in after:
        if other.item_id != item:
            out.append(new_tuple(CovisitRun, (other.item_id, (item,), 1.0, source, 0.0)))
    for j, later in enumerate(after):  # later = positives[p + j]; its window-th predecessor drops out
        k = p + j - window
        if k >= 0 and positives[k].item_id != later.item_id:
            out.append(new_tuple(CovisitRun, (later.item_id, (positives[k].item_id,), -1.0, source, 0.0)))


def add_history(history: list[HistoryEntry], entry: HistoryEntry, *, size: int) -> None:
    """Insert ``entry`` in time order, keeping the newest ``size`` entries."""
    if not history or entry >= history[-1]:
        history.append(entry)
    else:
        bisect.insort(history, entry)
    if len(history) > size:
        del history[: len(history) - size]
