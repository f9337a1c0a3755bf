"""Ranking metrics of the offline evaluation: HR@10 and NDCG@10 of one true item among sampled ones.

Ties are broken uniformly at random, in expectation: with ``g`` candidates scored above the
true item and ``t`` tied with it, the true item's 0-based position is uniform over
``g … g + t``, and HR@10 / NDCG@10 are the averages over those positions. A scorer that gives
every candidate the same score (an embedding decayed to zero, say) is therefore exactly at
chance — HR@10 = 10/101 among 100 negatives — never a sure miss and never a sure hit. A NaN
score counts as the lowest possible (a candidate the scorer could not score is ranked last).

(Averaging the *position* first — "a tie with k others counts k/2 places lower" — is not the
same: 100 ties put the true item at position 50 every time, HR@10 0, far below chance.)

>>> hr, ndcg = expected_hit_ndcg(np.zeros(101))          # everything tied: chance level
>>> round(hr, 4), round(hr * 101, 6)
(0.099, 10.0)
>>> expected_hit_ndcg(np.array([2.0, 1.0, 1.0]))           # strictly first
(1.0, 1.0)
>>> stats = VariantStats(); stats.add(1.0, 1.0); stats.add(0.0, 0.0); stats.summary()
{'hr@10': 0.5, 'ndcg@10': 0.5, 'users': 2}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["K", "VariantStats", "expected_hit_ndcg", "ranking_metrics"]

K = 10

#: ``_GAIN_BELOW[j]`` = Σ_{p < j} 1/log2(p + 2), the NDCG gain of positions 0 … j-1 (j = 0 … K).
_GAIN_BELOW = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(K) + 2.0))])


def ranking_metrics(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Expected HR@K and NDCG@K per row of ``scores`` (rows, candidates), the true item in column 0,
    ties broken uniformly at random (in expectation), NaN scored lowest. Returns two (rows,) arrays.

    >>> hr, ndcg = ranking_metrics(np.array([[1.0] * 11 + [0.0] * 5,                  # tied with 10: 10 of 11 places hit
    ...                                      [0.0, 1.0, np.nan, 0.0] + [-1.0] * 12]))  # 1 above, 1 tied: places 1, 2
    >>> hr.round(4).tolist(), ndcg.round(4).tolist()
    ([0.9091, 1.0], [0.4131, 0.5655])
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    scores = np.where(np.isnan(scores), -np.inf, scores)
    true = scores[:, :1]
    others = scores[:, 1:]
    above = np.sum(others > true, axis=1)
    tied = np.sum(others == true, axis=1)
    first = np.minimum(above, K)
    last = np.minimum(above + tied + 1, K)  # positions first … last-1 are inside the top K
    hr = (last - first) / (tied + 1.0)
    ndcg = (_GAIN_BELOW[last] - _GAIN_BELOW[first]) / (tied + 1.0)
    return hr, ndcg


def expected_hit_ndcg(scores: np.ndarray) -> tuple[float, float]:
    """(HR@K, NDCG@K) of one case: ``scores`` of the candidates, the true item first (see the module)."""
    hr, ndcg = ranking_metrics(np.asarray(scores, dtype=np.float64)[None, :])
    return float(hr[0]), float(ndcg[0])


@dataclass
class VariantStats:
    """Running HR@K and NDCG@K of one variant (one relevant item per user)."""

    hits: float = 0.0
    ndcg: float = 0.0
    users: int = 0

    def add(self, hit: float, ndcg: float) -> None:
        """One user's expected hit (0 … 1) and NDCG@K (:func:`expected_hit_ndcg`)."""
        self.users += 1
        self.hits += hit
        self.ndcg += ndcg

    def summary(self) -> dict[str, float]:
        n = max(self.users, 1)
        return {"hr@10": self.hits / n, "ndcg@10": self.ndcg / n, "users": self.users}
