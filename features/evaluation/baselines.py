"""The simple baselines p13n's blend must beat, computed beside it in ``p13n eval`` (issue 13).

* :class:`PopularityCount` — how many times each item was rated/interacted with, all time.
* :class:`CoOccurrence` — a plain item co-occurrence counter: every two items of one user
  within a window of ``window`` consecutive interactions are counted once (both ways), with no
  truncation; a candidate scores the sum of its counts with the user's last ``anchors`` items,
  ties broken by the popularity count. With ``window=5, anchors=10`` it is the counter quoted
  in issue 13 (HR@10 0.76 on MovieLens).

Both count every interaction with an item, whatever its value (a 1-star rating counts as a
co-occurrence too): they are the naive versions.

>>> co = CoOccurrence(window=2, anchors=2)
>>> for item in ["a", "b", "c"]:
...     co.add("u", item)
>>> co.counts["b"], co.anchors("u")
({'a': 1.0, 'c': 1.0}, ['b', 'c'])
>>> co.scores("u", ["a", "b", "x"]).tolist()
[1.0, 1.0, 0.0]
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np

__all__ = ["PopularityCount", "CoOccurrence", "with_tie_break"]


class PopularityCount:
    """All-time interaction count per item."""

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}

    def add(self, item_id: str, amount: float = 1.0) -> None:
        self.counts[item_id] = self.counts.get(item_id, 0.0) + amount

    def read(self, item_ids: Sequence[str]) -> np.ndarray:
        get = self.counts.get
        return np.array([get(i, 0.0) for i in item_ids], dtype=np.float64)


class CoOccurrence:
    """Untruncated symmetric counts of items within ``window`` consecutive interactions of a user."""

    def __init__(self, window: int = 5, anchors: int = 10) -> None:
        if window < 2 or anchors < 1:
            raise ValueError(f"window must be >= 2 and anchors >= 1, got {window}, {anchors}")
        self.window = window
        self.anchor_count = anchors
        self.counts: dict[str, dict[str, float]] = {}
        self._recent: dict[str, deque[str]] = {}

    def add(self, user: str, item_id: str) -> None:
        """The user's next interaction (in time order): pair it with the ``window - 1`` before it."""
        recent = self._recent.get(user)
        if recent is None:
            recent = self._recent[user] = deque(maxlen=max(self.window - 1, self.anchor_count))
        counts = self.counts
        for other in list(recent)[-(self.window - 1):]:
            if other != item_id:
                row = counts.setdefault(item_id, {})
                row[other] = row.get(other, 0.0) + 1.0
                row = counts.setdefault(other, {})
                row[item_id] = row.get(item_id, 0.0) + 1.0
        recent.append(item_id)

    def anchors(self, user: str) -> list[str]:
        """The user's last ``anchors`` items, oldest first."""
        return list(self._recent.get(user, ()))[-self.anchor_count:]

    def scores(self, user: str, candidates: Sequence[str]) -> np.ndarray:
        """Sum over the anchors of each candidate's count with them."""
        out = np.zeros(len(candidates), dtype=np.float64)
        for anchor in self.anchors(user):
            row = self.counts.get(anchor)
            if row:
                out += np.array([row.get(c, 0.0) for c in candidates])
        return out


def with_tie_break(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Scores ordering by ``primary`` (integer-valued counts), ties broken by ``secondary`` (>= 0).

    >>> with_tie_break(np.array([1.0, 1.0, 0.0]), np.array([3.0, 5.0, 9.0])).round(3).tolist()
    [1.333, 1.556, 1.0]
    """
    top = float(secondary.max(initial=0.0))
    return primary + (secondary / (top * 1.0000001) if top > 0 else 0.0)
