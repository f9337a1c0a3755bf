"""Prototype signals measured offline before they are built into the consumer (issue 13's directions).

Each is a :class:`~features.evaluation.replay.Signal`: it sees the replay's events in time order and
gives named features for a user's candidates, which blends then weigh (``p13n eval`` reports
them beside p13n's own; ``p13n tune`` may learn weights for them).

* :class:`LikedCooccurrence` — co-occurrence of *liked* items only (a low rating does not pair
  items as if liked), within ``window`` consecutive liked items of a user, read out against the
  user's last ``anchors`` liked items weighted ``recency**age``, raw (``co_raw``) and normalised
  by cosine (``co_cos``: ``c(a, b) / sqrt(n(a)·n(b))`` with ``n`` the item's liked count, which
  stops the counts from re-learning popularity). Both are scaled to [0, 1] over the candidates
  (``co_raw`` by log, as p13n's ``covisit``; ``co_cos`` by its maximum), so blend weights compare.
* :class:`MultiPopularity` — forward-decayed popularity with several time constants, read at the
  scoring time (``pop_<days>d``), log-scaled over the candidates like p13n's.

>>> from features.core.events import Event
>>> co = LikedCooccurrence(window=2, anchors=2, recency=0.5)
>>> for n, item in enumerate(["a", "b", "c"]):
...     co.observe(Event(event_id=str(n), user_id="u", type="rating", ts_ms=n, item_id=item, value=5.0), 2.0)
>>> co.observe(Event(event_id="x", user_id="u", type="rating", ts_ms=9, item_id="z", value=1.0), -2.0)
>>> {k: v.round(3).tolist() for k, v in co.features("default/u", ["a", "z"], 10).items()}
{'co_raw': [1.0, 0.0], 'co_cos': [1.0, 0.0]}
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np

from features.evaluation.replay import Signal
from features.core.events import Event
from features.core.scorer import _scaled_log
from features.core.signals import Popularity

__all__ = ["LikedCooccurrence", "MultiPopularity", "UserNeighbours"]


class LikedCooccurrence(Signal):
    """Untruncated co-occurrence counts of liked items (see the module docstring)."""

    def __init__(self, window: int = 10, anchors: int = 20, recency: float = 0.9, prefix: str = "co",
                 betas: Sequence[float] = (), liked_only: bool = True) -> None:
        if window < 1 or anchors < 1 or not 0 < recency <= 1:
            raise ValueError(f"window, anchors >= 1 and 0 < recency <= 1 required, got {window}, {anchors}, {recency}")
        self.window, self.anchors, self.recency, self.prefix = window, anchors, recency, prefix
        self.liked_only = liked_only  # False: every rating pairs items, as the naive counter does
        self.betas = tuple(betas)  # extra features co_b<beta>: c(a, b) / (n(a)^(1-beta) · n(b)^beta)
        self.counts: dict[str, dict[str, float]] = {}
        self.liked: dict[str, float] = {}
        self._recent: dict[str, deque[str]] = {}

    def observe(self, event: Event, weight: float) -> None:
        if (self.liked_only and weight <= 0) or event.item_id is None:
            return
        item = event.item_id
        recent = self._recent.get(event.key)
        if recent is None:
            recent = self._recent[event.key] = deque(maxlen=max(self.window, self.anchors))
        if item in recent:
            return
        counts = self.counts
        for other in list(recent)[-self.window:]:
            row = counts.setdefault(item, {})
            row[other] = row.get(other, 0.0) + 1.0
            row = counts.setdefault(other, {})
            row[item] = row.get(item, 0.0) + 1.0
        self.liked[item] = self.liked.get(item, 0.0) + 1.0
        recent.append(item)

    def features(self, user: str, candidates: Sequence[str], now_ms: int) -> dict[str, np.ndarray]:
        anchors = list(self._recent.get(user, ()))[-self.anchors:]
        raw = np.zeros(len(candidates))
        cos = np.zeros(len(candidates))
        liked = self.liked
        cand_counts = np.array([liked.get(c, 0.0) or 1.0 for c in candidates])
        cand_norm = np.sqrt(cand_counts)
        extra = {b: np.zeros(len(candidates)) for b in self.betas}
        cand_pows = {b: cand_counts**b for b in self.betas}
        for age, anchor in enumerate(reversed(anchors)):
            row = self.counts.get(anchor)
            if not row:
                continue
            weight = self.recency**age
            values = np.array([row.get(c, 0.0) for c in candidates])
            raw += weight * values
            cos += weight * values / (cand_norm * math.sqrt(liked.get(anchor, 1.0)))
            for b in self.betas:
                extra[b] += weight * values / (cand_pows[b] * liked.get(anchor, 1.0) ** (1 - b))
        out = {f"{self.prefix}_raw": _scaled_log(raw), f"{self.prefix}_cos": _by_max(cos)}
        out.update({f"{self.prefix}_b{b:g}": _by_max(v) for b, v in extra.items()})
        return out


def _by_max(values: np.ndarray) -> np.ndarray:
    top = float(values.max(initial=0.0))
    return values / top if top > 0 else values


class MultiPopularity(Signal):
    """Forward-decayed popularity of liked events with several time constants (days)."""

    def __init__(self, days: Sequence[float] = (30.0, 365.0)) -> None:
        self.pops = {d: Popularity(d * 86400.0) for d in days}

    def observe(self, event: Event, weight: float) -> None:
        if weight > 0 and event.item_id is not None:
            for pop in self.pops.values():
                pop.add(event.item_id, event.ts_ms, 1.0)

    def features(self, user: str, candidates: Sequence[str], now_ms: int) -> dict[str, np.ndarray]:
        return {f"pop_{d:g}d": _scaled_log(np.array(pop.read(candidates, now_ms))) for d, pop in self.pops.items()}


class UserNeighbours(Signal):
    """User-based k-nearest neighbours on liked items: the ``k`` users whose liked sets are most
    cosine-similar to the user's (``|A ∩ B| / sqrt(|A|·|B|)``) vote for the items they liked, each
    vote weighted by the similarity (``uknn``, scaled by its maximum over the candidates)."""

    def __init__(self, k: int = 50) -> None:
        self.k = k
        self.liked: dict[str, set[str]] = {}

    def observe(self, event: Event, weight: float) -> None:
        if weight > 0 and event.item_id is not None:
            self.liked.setdefault(event.key, set()).add(event.item_id)

    def features(self, user: str, candidates: Sequence[str], now_ms: int) -> dict[str, np.ndarray]:
        mine = self.liked.get(user, set())
        votes = np.zeros(len(candidates))
        if mine:
            sims = sorted(((len(mine & theirs) / math.sqrt(len(mine) * len(theirs)), other)
                           for other, theirs in self.liked.items() if other != user and theirs), reverse=True)[: self.k]  # fmt: skip
            for sim, other in sims:
                if sim > 0:
                    theirs = self.liked[other]
                    votes += sim * np.array([c in theirs for c in candidates], dtype=np.float64)
        return {"uknn": _by_max(votes)}
