"""Ranking metrics of the offline evaluation: HR@10 and NDCG@10 of one true item among sampled ones.

Ties are broken by expected position (a tie with k others counts k/2 places lower), so a
scorer that gives everything the same score gets chance level, not a hit.

>>> expected_position(np.array([1.0, 1.0, 1.0, 0.0]))   # tied with two others: 1 place down on average
1.0
>>> stats = VariantStats(); stats.add(0.0); stats.add(20.0); stats.summary()
{'hr@10': 0.5, 'ndcg@10': 0.5, 'users': 2}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["K", "VariantStats", "expected_position"]

K = 10


def expected_position(scores: np.ndarray) -> float:
    """Expected 0-based position of candidate 0 (the true item) under random tie-breaking."""
    true = scores[0]
    others = scores[1:]
    return float(np.sum(others > true) + 0.5 * np.sum(others == true))


@dataclass
class VariantStats:
    """Running HR@K and NDCG@K of one variant (one relevant item per user)."""

    hits: float = 0.0
    ndcg: float = 0.0
    users: int = 0

    def add(self, position: float) -> None:
        self.users += 1
        if position < K:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(position + 2)

    def summary(self) -> dict[str, float]:
        n = max(self.users, 1)
        return {"hr@10": self.hits / n, "ndcg@10": self.ndcg / n, "users": self.users}
