"""Global (per-tenant) signals: forward-decayed item popularity and bounded co-visitation.

These in-memory classes define the math; :mod:`features.store` keeps the same
numbers in Redis (the offline evaluation uses these directly).

Forward decay (Cormode et al.): each event adds ``w·exp((t − t0)/τ)`` to its
item's score against a landmark ``t0``; the popularity at ``now`` is
``score·exp(−(now − t0)/τ)``. Adding never touches other items; when the
exponent grows large the landmark moves forward and all scores are rescaled once.

>>> pop = Popularity(tau_s=86400.0)
>>> pop.add("a", ts_ms=0, weight=2.0)
>>> pop.add("b", ts_ms=86_400_000, weight=2.0)
>>> [round(x, 3) for x in pop.read(["a", "b", "zzz"], now_ms=86_400_000)]
[0.736, 2.0, 0.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["Popularity", "CoVisitation", "RESCALE_EXPONENT"]

#: Move the landmark when an increment's exponent passes this (exp(60) ~ 1e26, far from overflow).
RESCALE_EXPONENT = 60.0


class Popularity:
    """Forward-decayed popularity of items."""

    def __init__(self, tau_s: float) -> None:
        if not tau_s > 0:
            raise ValueError(f"tau_s must be > 0, got {tau_s}")
        self.tau_s = float(tau_s)
        self.landmark_s: float | None = None
        self.scores: dict[str, float] = {}

    def add(self, item_id: str, ts_ms: int, weight: float) -> None:
        t = ts_ms / 1000.0
        if self.landmark_s is None:
            self.landmark_s = t
        exponent = (t - self.landmark_s) / self.tau_s
        if exponent > RESCALE_EXPONENT:
            self._rescale(t)
            exponent = 0.0
        self.scores[item_id] = self.scores.get(item_id, 0.0) + weight * math.exp(exponent)

    def _rescale(self, new_landmark_s: float) -> None:
        assert self.landmark_s is not None
        factor = math.exp(-(new_landmark_s - self.landmark_s) / self.tau_s)
        self.scores = {k: v * factor for k, v in self.scores.items()}
        self.landmark_s = new_landmark_s

    def read(self, item_ids: Sequence[str], now_ms: int) -> list[float]:
        """Popularity of each item at ``now_ms`` (0 for unknown items)."""
        if self.landmark_s is None:
            return [0.0] * len(item_ids)
        factor = math.exp(-(now_ms / 1000.0 - self.landmark_s) / self.tau_s)
        return [self.scores.get(i, 0.0) * factor for i in item_ids]

    def top(self, k: int) -> list[str]:
        """The ``k`` most popular items (ranking does not depend on ``now``)."""
        return [i for i, _ in sorted(self.scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def trim_after(top_m: int) -> int:
    """Rows are trimmed back to ``top_m`` once they pass this size (amortises the trim).

    >>> trim_after(100)
    125
    """
    return top_m + max(1, top_m // 4)


def trim_row(row: dict[str, float], top_m: int) -> None:
    """Drop the weakest entries of ``row`` (in place) once it passes :func:`trim_after`; ties drop the
    lexicographically smallest member first — the order Redis' ZREMRANGEBYRANK uses."""
    if len(row) > trim_after(top_m):
        for member, _ in sorted(row.items(), key=lambda kv: (kv[1], kv[0]))[: len(row) - top_m]:
            del row[member]


class CoVisitation:
    """Counts of items seen close together in users' histories, top-M kept per item.

    >>> cv = CoVisitation(top_m=2)
    >>> cv.add([("a", "b"), ("a", "b"), ("a", "c"), ("a", "d"), ("a", "e")])
    >>> cv.neighbours("a")       # 4 neighbours > trim_after(2) = 3: trimmed to the top 2
    {'b': 2.0, 'e': 1.0}
    """

    def __init__(self, top_m: int) -> None:
        if top_m < 1:
            raise ValueError(f"top_m must be >= 1, got {top_m}")
        self.top_m = top_m
        self.counts: dict[str, dict[str, float]] = {}

    def add(self, pairs: Iterable[tuple[str, str]] | Iterable[tuple[str, str, float]]) -> None:
        """Count each pair (with an optional delta, default 1) in both directions (symmetric)."""
        touched: set[str] = set()
        for pair in pairs:
            a, b = pair[0], pair[1]
            delta = pair[2] if len(pair) > 2 else 1.0
            if a == b:
                continue
            for x, y in ((a, b), (b, a)):
                row = self.counts.setdefault(x, {})
                row[y] = row.get(y, 0.0) + delta
                touched.add(x)
        for item in touched:
            trim_row(self.counts[item], self.top_m)

    def neighbours(self, item_id: str) -> dict[str, float]:
        return dict(sorted(self.counts.get(item_id, {}).items(), key=lambda kv: (-kv[1], kv[0])))

    def matrix(self, anchors: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Counts as an array (len(anchors), len(candidates))."""
        out = np.zeros((len(anchors), len(candidates)), dtype=np.float64)
        for i, anchor in enumerate(anchors):
            row = self.counts.get(anchor)
            if row:
                out[i] = [row.get(c, 0.0) for c in candidates]
        return out
