"""A tenant's items and global signals held in process as arrays over integer item ids, each trusted for a
bounded time: co-visitation rows and occurrence counts, item popularity, and the items themselves (vector,
attribute keys).

The request path weighs the cosine co-visitation ``c(a, x) / sqrt(n(a)·n(x))`` of up to
``scoring.covisit_anchors`` (30) anchors against ~100 candidates. Built from per-anchor dicts that is
~3,000 dict look-ups per request (~1 ms of CPU on the 2-core machine); here items get integer ids once,
a row is two arrays (its neighbours' ids and their counts) and the matrix is filled by one
``searchsorted`` over all rows together (:meth:`SignalTable.counts`).

Popularity is held as Redis stores it: forward-decayed scores relative to the tenant's landmark
(:class:`~features.core.signals.Popularity`), trusted for ``popularity_ttl_s``; scores read against another
landmark (a rescale) drop every held score. ``ZMSCORE`` of ~100 candidates was ~8% of a request's CPU.

Items (``item_ttl_s``, ``consumer.item_cache_ttl_s``) are held as rows of one vector matrix and one matrix of
attribute-key numbers (:meth:`SignalTable.candidates`), so a request gathers its ~100 candidates with two
fancy indexes instead of ~100 cache look-ups and row copies; an item Redis does not hold is held as such (no
vector, no attributes) for the same time.

Expiry is spread: with ``jitter`` j, an entry is taken as read up to ``j·ttl`` earlier than it was (uniformly at
random), so entries read together (a request's candidates, a cold start) are not all read again in the same
second; no entry is ever trusted longer than its time to live.

Nothing here reads Redis: the caller asks which rows, counts and scores are missing or older than their
time to live (:meth:`SignalTable.stale_rows`, :meth:`SignalTable.stale_counts`,
:meth:`SignalTable.stale_popularity`, :meth:`SignalTable.stale_items`), fetches them, and puts them back.
A table holds at most ``max_items`` item ids, ``max_held`` items and ``max_rows`` rows: past ``max_items`` or
``max_held`` the owner starts a fresh table (:meth:`SignalTable.full`), so ids held by a request still in flight stay valid in the old one.

>>> now = [0.0]
>>> table = SignalTable(ttl_s=30, clock=lambda: now[0])
>>> table.stale_rows(["a"]), table.stale_counts(["a", "x", "y"])
(['a'], ['a', 'x', 'y'])
>>> table.put_row("a", ["x", "z"], [2.0, 5.0]); table.put_counts(["a", "x", "y"], [4.0, 1.0, None])
>>> table.counts(["a"], ["y", "x"]).tolist()
[[0.0, 2.0]]
>>> table.cosine(["a"], ["y", "x"]).round(3).tolist()       # min(2, n(x) = 1) / sqrt(4 · 1)
[[0.0, 0.5]]
>>> now[0] = 31.0                                   # older than ttl_s: fetched again
>>> table.stale_rows(["a"]), table.stale_counts(["x"])
(['a'], ['x'])
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from features.core.signals import cosine

__all__ = ["SignalTable", "HeldItem"]

_ID = np.int32


class HeldItem(Protocol):
    """What the table keeps of an item (:class:`features.core.state.ItemInfo` has it)."""

    vector: np.ndarray | None
    attribute_keys: Sequence[str]


class SignalTable:
    """One tenant's co-visitation rows (anchor → neighbours' counts) and occurrence counts ``n``."""

    def __init__(self, ttl_s: float, *, popularity_ttl_s: float = 0.0, item_ttl_s: float = 0.0, dim: int = 0,
                 max_items: int = 500_000, max_held: int = 100_000, max_rows: int = 50_000, jitter: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, seed: int | None = None) -> None:  # fmt: skip
        if min(ttl_s, popularity_ttl_s, item_ttl_s, dim) < 0 or min(max_items, max_held, max_rows) < 1 or not 0 <= jitter < 1:
            raise ValueError(f"ttl_s, popularity_ttl_s, item_ttl_s, dim >= 0, max_items, max_held, max_rows >= 1 and "
                             f"0 <= jitter < 1 expected, got {ttl_s}, {popularity_ttl_s}, {item_ttl_s}, {dim}, "
                             f"{max_items}, {max_held}, {max_rows}, {jitter}")  # fmt: skip
        self.ttl_s = ttl_s
        self.popularity_ttl_s = popularity_ttl_s
        self.item_ttl_s = item_ttl_s
        self.jitter = jitter
        self._rng = np.random.default_rng(seed)
        self._items = _ItemColumns(dim, max_held)
        self._pop = np.zeros(1024, dtype=np.float64)  # stored popularity score by item id (0: none)
        self._pop_at = np.full(1024, -np.inf)
        self._landmark: float | None = None  # the landmark the held scores are relative to
        self.max_items = max_items
        self.max_rows = max_rows
        self.clock = clock
        self._ids: dict[str, int] = {}
        self._n = np.zeros(1024, dtype=np.float64)  # occurrence count by item id
        self._n_at = np.full(1024, -np.inf)  # when it was read (clock seconds); -inf: never
        self._column = np.full(1024, -1, dtype=_ID)  # scratch of _counts: item id -> candidate column
        self._rows: dict[int, tuple[float, np.ndarray, np.ndarray]] = {}  # anchor id -> (read at, ids, counts)
        self._row_at = np.full(1024, -np.inf)  # when each item's row was read (-inf: not held)

    @property
    def full(self) -> bool:
        """True once the table holds ``max_items`` item ids (the owner should start a new one)."""
        return len(self._ids) >= self.max_items or self._items.full

    def ids(self, items: Sequence[str]) -> np.ndarray:
        """Integer ids of ``items`` (new items get the next ids), shape (len(items),)."""
        known = self._ids
        out = list(map(known.get, items))
        if None in out:
            for n, item in enumerate(items):
                if out[n] is None:
                    out[n] = known.setdefault(item, len(known))
            if len(known) > self._n.size:
                grow = max(len(known), 2 * self._n.size) - self._n.size
                self._n = np.concatenate([self._n, np.zeros(grow)])
                self._n_at = np.concatenate([self._n_at, np.full(grow, -np.inf)])
                self._column = np.concatenate([self._column, np.full(grow, -1, dtype=_ID)])
                self._pop = np.concatenate([self._pop, np.zeros(grow)])
                self._pop_at = np.concatenate([self._pop_at, np.full(grow, -np.inf)])
                self._row_at = np.concatenate([self._row_at, np.full(grow, -np.inf)])
                self._items.grow(grow)
        return np.fromiter(out, dtype=_ID, count=len(out))

    def _read_at(self, n: int, ttl_s: float) -> float | np.ndarray:
        """When ``n`` entries read now count as read: now, or up to ``jitter·ttl_s`` earlier each."""
        now = self.clock()
        return now - self._rng.random(n) * (self.jitter * ttl_s) if self.jitter and ttl_s else now

    def stale_rows(self, anchors: Sequence[str], ids: np.ndarray | None = None) -> list[str]:
        """The anchors (with their :meth:`ids`, when known) whose row is not held or older than ``ttl_s``."""
        ids = self.ids(anchors) if ids is None else ids
        stale = np.flatnonzero(self._row_at[ids] < self.clock() - self.ttl_s)
        return [anchors[n] for n in stale.tolist()] if stale.size else []

    def stale_counts(self, items: Sequence[str], ids: np.ndarray | None = None) -> list[str]:
        """The distinct ``items`` (with their :meth:`ids`, when known) whose occurrence count is not held or older
        than ``ttl_s``, in order."""
        ids = self.ids(items) if ids is None else ids
        stale = np.flatnonzero(self._n_at[ids] < self.clock() - self.ttl_s)
        return list(dict.fromkeys(items[n] for n in stale.tolist())) if stale.size else []

    def put_row(self, anchor: str, members: Sequence[str], counts: Sequence[float]) -> None:
        """Hold ``anchor``'s row: its neighbours and their co-visitation counts (aligned)."""
        key = int(self.ids([anchor])[0])
        self._rows.pop(key, None)  # re-inserted last: the rows stay in the order they were read
        read_at = float(self._read_at(1, self.ttl_s)[0]) if self.jitter and self.ttl_s else self.clock()
        self._rows[key] = (read_at, self.ids(members), np.asarray(counts, dtype=np.float64))
        self._row_at[key] = read_at
        if len(self._rows) > self.max_rows:
            oldest = next(iter(self._rows))
            del self._rows[oldest]
            self._row_at[oldest] = -np.inf

    def put_counts(self, items: Sequence[str], counts: Sequence[float | None], ids: np.ndarray | None = None) -> None:
        """Hold the occurrence counts of ``items`` (with their :meth:`ids`, when known; None: never occurred, 0)."""
        ids = self.ids(items) if ids is None else ids
        self._n[ids] = [0.0 if c is None else float(c) for c in counts]
        self._n_at[ids] = self._read_at(ids.size, self.ttl_s)

    def stale_popularity(self, items: Sequence[str], ids: np.ndarray) -> list[str]:
        """The ``items`` (with their :meth:`ids`) whose popularity score is not held or older than
        ``popularity_ttl_s``, in order."""
        return [items[n] for n in self.stale_popularity_at(ids).tolist()]

    def stale_popularity_at(self, ids: np.ndarray) -> np.ndarray:
        """:meth:`stale_popularity` as positions in ``ids``."""
        return np.flatnonzero(self._pop_at[ids] < self.clock() - self.popularity_ttl_s)

    def put_popularity(self, items: Sequence[str], scores: Sequence[float | None], landmark: float | None,
                       ids: np.ndarray | None = None) -> None:  # fmt: skip
        """Hold the stored popularity ``scores`` of ``items`` (with their :meth:`ids`, when known; None: none), read
        against ``landmark`` (None: the tenant has no popularity yet); scores held against another landmark are
        dropped."""
        if landmark != self._landmark:
            self._pop_at[:] = -np.inf
            self._landmark = landmark
        if items:
            ids = self.ids(items) if ids is None else ids
            self._pop[ids] = [s or 0.0 for s in scores]
            self._pop_at[ids] = self._read_at(ids.size, self.popularity_ttl_s)

    def popularity(self, ids: np.ndarray, landmark: float | None) -> np.ndarray | None:
        """The held stored scores of ``ids`` — None unless every one is held against ``landmark`` (the caller
        reads them all again: the landmark moved since some were read)."""
        if landmark != self._landmark or np.isneginf(self._pop_at[ids]).any():
            return None
        return self._pop[ids]

    def stale_items(self, items: Sequence[str], ids: np.ndarray) -> list[str]:
        """The distinct ``items`` (with their :meth:`ids`) not held or older than ``item_ttl_s``, in order."""
        stale = np.flatnonzero(self._items.read_at[ids] < self.clock() - self.item_ttl_s)
        return list(dict.fromkeys(items[n] for n in stale.tolist())) if stale.size else []

    def put_items(self, items: Sequence[str], found: Mapping[str, HeldItem]) -> None:
        """Hold ``items`` as read: its item in ``found``, or not stored (absent there)."""
        if items:
            ids = self.ids(items)
            self._items.put(ids, [found.get(item) for item in items], self._read_at(ids.size, self.item_ttl_s))

    def candidates(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The held items of ``ids``: vectors (n, dim) float32 (zero rows for items without one), whether each has
        a vector (n,), and attribute-key numbers (n, w) into :attr:`attribute_keys` (0: none, padding last)."""
        return self._items.gather(ids)

    @property
    def attribute_keys(self) -> Mapping[str, int]:
        """Attribute key (``name=value``) -> its number in :meth:`candidates` (from 1)."""
        return self._items.keys

    def counts(self, anchors: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Co-visitation counts ``c(a, x)``, shape (len(anchors), len(candidates)); an anchor without a held
        row counts 0 everywhere."""
        return self._counts(self.ids(anchors), self.ids(candidates))

    def _counts(self, anchor_ids: np.ndarray, candidate_ids: np.ndarray) -> np.ndarray:
        out = np.zeros((anchor_ids.size, candidate_ids.size), dtype=np.float64)
        rows = self._rows
        held = [(n, row) for n, row in enumerate(map(rows.get, anchor_ids.tolist())) if row is not None]
        if not held or not candidate_ids.size:
            return out
        members = np.concatenate([row[1] for _, row in held])
        values = np.concatenate([row[2] for _, row in held])
        row_of = np.repeat(np.array([n for n, _ in held]), np.array([row[1].size for _, row in held]))
        column = self._column  # -1 everywhere between calls; the candidates' columns during this one
        column[candidate_ids] = np.arange(candidate_ids.size, dtype=_ID)
        try:
            at = column[members]
            winner = column[candidate_ids]  # a duplicate candidate: the last of its columns
        finally:
            column[candidate_ids] = -1
        hit = at >= 0
        out[row_of[hit], at[hit]] = values[hit]
        if (winner != np.arange(winner.size)).any():
            out = out[:, winner]  # every copy of a duplicate gets its counts
        return out

    def cosine(self, anchors: Sequence[str], candidates: Sequence[str], ids: np.ndarray | None = None) -> np.ndarray:
        """:func:`~features.core.signals.cosine` of :meth:`counts` with the held occurrence counts; ``ids``: the
        :meth:`ids` of ``[*anchors, *candidates]`` when known."""
        ids = self.ids([*anchors, *candidates]) if ids is None else ids
        n = self._n[ids]
        a = len(anchors)
        return cosine(self._counts(ids[:a], ids[a:]), n[:a], n[a:])


class _ItemColumns:
    """Items held by id: a slot per item (-1 none) into a vector matrix and an attribute-key matrix, grown by
    doubling up to ``max_held`` slots."""

    def __init__(self, dim: int, max_held: int) -> None:
        self.dim = dim
        self.max_held = max_held
        self.read_at = np.full(1024, -np.inf)  # by item id
        self.slot = np.full(1024, -1, dtype=_ID)  # by item id
        self.vectors = np.zeros((64, dim), dtype=np.float32)  # by slot
        self.has_vector = np.zeros(64, dtype=bool)
        self.attributes = np.zeros((64, 1), dtype=_ID)  # by slot: attribute-key numbers, 0 after the last
        self.width = np.zeros(64, dtype=_ID)  # by slot: how many
        self.keys: dict[str, int] = {}
        self.used = 0

    @property
    def full(self) -> bool:
        return self.used >= self.max_held

    def grow(self, grow: int) -> None:
        self.read_at = np.concatenate([self.read_at, np.full(grow, -np.inf)])
        self.slot = np.concatenate([self.slot, np.full(grow, -1, dtype=_ID)])

    def put(self, ids: np.ndarray, infos: Sequence[HeldItem | None], read_at) -> None:
        slots = self.slot[ids]
        for n in np.flatnonzero(slots < 0).tolist():
            slot = self.slot[ids[n]]  # a duplicate item got its slot a step ago
            if slot < 0:
                slot = self.slot[ids[n]] = self._new_slot()
            slots[n] = slot
        for slot, info in zip(slots.tolist(), infos):
            vector = info.vector if info is not None else None
            self.has_vector[slot] = vector is not None
            self.vectors[slot] = vector if vector is not None else 0.0
            keys = info.attribute_keys if info is not None else ()
            if len(keys) > self.attributes.shape[1]:
                wider = np.zeros((self.attributes.shape[0], len(keys)), dtype=_ID)
                wider[:, : self.attributes.shape[1]] = self.attributes
                self.attributes = wider
            row = self.attributes[slot]
            row[:] = 0
            row[: len(keys)] = [self.keys.setdefault(key, len(self.keys) + 1) for key in keys]
            self.width[slot] = len(keys)
        self.read_at[ids] = read_at

    def _new_slot(self) -> int:
        slot = self.used
        self.used += 1
        if slot >= self.has_vector.size:
            grow = self.has_vector.size
            self.vectors = np.concatenate([self.vectors, np.zeros((grow, self.dim), dtype=np.float32)])
            self.has_vector = np.concatenate([self.has_vector, np.zeros(grow, dtype=bool)])
            self.attributes = np.concatenate([self.attributes, np.zeros((grow, self.attributes.shape[1]), dtype=_ID)])
            self.width = np.concatenate([self.width, np.zeros(grow, dtype=_ID)])
        return slot

    def gather(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        slots = self.slot[ids]
        held = slots >= 0
        if not held.all():  # items never read (the caller's reads failed): no vector, no attributes
            slots = np.where(held, slots, 0)
            vectors, has_vector, attributes = self.vectors[slots], self.has_vector[slots] & held, self.attributes[slots]
            vectors[~held] = 0.0
            attributes[~held] = 0
        else:
            vectors, has_vector, attributes = self.vectors[slots], self.has_vector[slots], self.attributes[slots]
        width = int(self.width[slots[held]].max(initial=0))
        return vectors, has_vector, attributes[:, :width]
