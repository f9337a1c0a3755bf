"""A tenant's global signals held in process as arrays, trusted for a bounded time: co-visitation rows and
occurrence counts, and item popularity.

The request path weighs the cosine co-visitation ``c(a, x) / sqrt(n(a)·n(x))`` of up to
``scoring.covisit_anchors`` (30) anchors against ~100 candidates. Built from per-anchor dicts that is
~3,000 dict look-ups per request (~1 ms of CPU on the 2-core machine); here items get integer ids once,
a row is two arrays (its neighbours' ids and their counts) and the matrix is filled by one
``searchsorted`` over all rows together (:meth:`SignalTable.counts`).

Popularity is held as Redis stores it: forward-decayed scores relative to the tenant's landmark
(:class:`~features.core.signals.Popularity`), trusted for ``popularity_ttl_s``; scores read against another
landmark (a rescale) drop every held score. ``ZMSCORE`` of ~100 candidates was ~8% of a request's CPU.

Nothing here reads Redis: the caller asks which rows, counts and scores are missing or older than their
time to live (:meth:`SignalTable.stale_rows`, :meth:`SignalTable.stale_counts`,
:meth:`SignalTable.stale_popularity`), fetches them, and puts them back.
A table holds at most ``max_items`` item ids and ``max_rows`` rows: past ``max_items`` the owner starts a
fresh table (:meth:`SignalTable.full`), so ids held by a request still in flight stay valid in the old one.

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
from collections.abc import Callable, Sequence

import numpy as np

from features.core.signals import cosine

__all__ = ["SignalTable"]

_ID = np.int32


class SignalTable:
    """One tenant's co-visitation rows (anchor → neighbours' counts) and occurrence counts ``n``."""

    def __init__(self, ttl_s: float, *, popularity_ttl_s: float = 0.0, max_items: int = 500_000, max_rows: int = 50_000,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        if ttl_s < 0 or popularity_ttl_s < 0 or max_items < 1 or max_rows < 1:
            raise ValueError(f"ttl_s >= 0, popularity_ttl_s >= 0, max_items >= 1 and max_rows >= 1 expected, got "
                             f"{ttl_s}, {popularity_ttl_s}, {max_items}, {max_rows}")  # fmt: skip
        self.ttl_s = ttl_s
        self.popularity_ttl_s = popularity_ttl_s
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

    @property
    def full(self) -> bool:
        """True once the table holds ``max_items`` item ids (the owner should start a new one)."""
        return len(self._ids) >= self.max_items

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
        return np.fromiter(out, dtype=_ID, count=len(out))

    def stale_rows(self, anchors: Sequence[str]) -> list[str]:
        """The anchors whose row is not held or older than ``ttl_s``."""
        oldest = self.clock() - self.ttl_s
        rows, known = self._rows, self._ids
        out = []
        for anchor in anchors:
            entry = rows.get(known.get(anchor, -1))
            if entry is None or entry[0] < oldest:
                out.append(anchor)
        return out

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
        self._rows[key] = (self.clock(), self.ids(members), np.asarray(counts, dtype=np.float64))
        if len(self._rows) > self.max_rows:
            del self._rows[next(iter(self._rows))]

    def put_counts(self, items: Sequence[str], counts: Sequence[float | None]) -> None:
        """Hold the occurrence counts of ``items`` (None: never occurred, 0)."""
        ids = self.ids(items)
        self._n[ids] = [0.0 if c is None else float(c) for c in counts]
        self._n_at[ids] = self.clock()

    def stale_popularity(self, items: Sequence[str], ids: np.ndarray) -> list[str]:
        """The ``items`` (with their :meth:`ids`) whose popularity score is not held or older than
        ``popularity_ttl_s``, in order."""
        stale = np.flatnonzero(self._pop_at[ids] < self.clock() - self.popularity_ttl_s)
        return [items[n] for n in stale.tolist()] if stale.size else []

    def put_popularity(self, items: Sequence[str], scores: Sequence[float | None], landmark: float | None) -> None:
        """Hold the stored popularity ``scores`` of ``items`` (None: none), read against ``landmark`` (None: the
        tenant has no popularity yet); scores held against another landmark are dropped."""
        if landmark != self._landmark:
            self._pop_at[:] = -np.inf
            self._landmark = landmark
        if items:
            ids = self.ids(items)
            self._pop[ids] = [s or 0.0 for s in scores]
            self._pop_at[ids] = self.clock()

    def popularity(self, ids: np.ndarray, landmark: float | None) -> np.ndarray | None:
        """The held stored scores of ``ids`` — None unless every one is held against ``landmark`` (the caller
        reads them all again: the landmark moved since some were read)."""
        if landmark != self._landmark or np.isneginf(self._pop_at[ids]).any():
            return None
        return self._pop[ids]

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
