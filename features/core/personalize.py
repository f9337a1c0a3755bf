"""The pure steps of the request path, between the reads and the answer: turn what was read from Redis into
scorer input and a ranked list, and pack a user's stored memories into their share of a prompt.

No I/O: the one orchestration of a request (reads under a deadline, the encoder, degradation) is
:class:`serving.personalizer.Personalizer`; it calls these, and so can a test that computes the expected
answer from the same state.

>>> import numpy as np
>>> from features.core.state import ItemInfo
>>> items = {"a": ItemInfo(vector=np.array([1.0, 0.0], np.float32)), "b": ItemInfo(vector=None)}
>>> [c.item_id for c in needs_text_vectors([CandidateIn("a", "x"), CandidateIn("b", "y"), CandidateIn("c")], items)]
['b']
>>> [(s.item_id, s.score) for s in rank_candidates(["a", "b"], items, np.array([0.0, 1.0]), None, None, dim=2,
...                                                 weights={"popularity": 1.0})]
[('b', 1.0), ('a', 0.0)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from features.core.memory_codec import MemoryFormatError, decode_columns
from features.core.memory_retrieval import MemoryTable, PackedMemories, RetrievalSpec, retrieve
from features.core.scorer import COVISIT_RECENCY, Candidates, UserView, rank, score
from features.core.state import ItemInfo
from p13n.config import MemoryConfig

__all__ = [
    "CandidateIn",
    "ScoredItem",
    "rank_candidates",
    "rank_scored",
    "needs_text_vectors",
    "candidates_from",
    "memories_for_prompt",
]


@dataclass(frozen=True)
class CandidateIn:
    """A candidate of ``/v1/score``: its item id and, for an item p13n may not know, its text."""

    item_id: str
    text: str | None = None


@dataclass(frozen=True)
class ScoredItem:
    """A ranked candidate: its blended score and, when asked to explain, each feature's value (6 decimals)."""

    item_id: str
    score: float
    features: dict[str, float] | None = None


def candidates_from(
    candidate_ids: Sequence[str],
    items: Mapping[str, ItemInfo],
    popularity: np.ndarray,
    dim: int,
    text_vectors: Mapping[str, np.ndarray] | None = None,
) -> Candidates:
    """Scorer input from stored items; ``text_vectors`` fills in vectors of unknown items sent with text."""
    vectors = np.zeros((len(candidate_ids), dim), dtype=np.float32)
    keys: list[list[str]] = []
    for n, item_id in enumerate(candidate_ids):
        info = items.get(item_id)
        if info is not None and info.vector is not None:
            vectors[n] = info.vector
        elif text_vectors and item_id in text_vectors:
            vectors[n] = text_vectors[item_id]
        keys.append(info.attribute_keys if info is not None else [])
    return Candidates(item_ids=list(candidate_ids), vectors=vectors, attribute_keys=keys, popularity=popularity)


def rank_candidates(
    ids: Sequence[str],
    items: Mapping[str, ItemInfo],
    popularity: np.ndarray,
    view: UserView | None,
    covisit: np.ndarray | None,
    *,
    dim: int,
    weights: Mapping[str, float],
    k: int | None = None,
    explain: bool = False,
    text_vectors: Mapping[str, np.ndarray] | None = None,
    covisit_recency: float = COVISIT_RECENCY,
) -> list[ScoredItem]:
    """Score and order candidates from what was read (shared by the sync path and the Serve app);
    ``covisit`` is the cosine co-visitation matrix (:meth:`~features.redis.store.RedisStore.covisit_matrix`)."""
    cands = candidates_from(ids, items, popularity, dim, text_vectors)
    cands.covisit = covisit
    return rank_scored(cands, view, weights=weights, k=k, explain=explain, covisit_recency=covisit_recency)


def rank_scored(cands: Candidates, view: UserView | None, *, weights: Mapping[str, float], k: int | None = None,
                explain: bool = False, covisit_recency: float = COVISIT_RECENCY) -> list[ScoredItem]:  # fmt: skip
    """Score and order scorer input however it was assembled (:func:`candidates_from`, or the Serve app's held
    item table); the top ``k``, each with its features when ``explain``."""
    ids = cands.item_ids
    scored = score(view, cands, weights, covisit_recency=covisit_recency)
    out = []
    for i in rank(scored.scores, k):
        features = {name: round(float(values[i]), 6) for name, values in scored.features.items()} if explain else None
        out.append(ScoredItem(ids[i], round(float(scored.scores[i]), 6), features))
    return out


def needs_text_vectors(candidates: Sequence[CandidateIn], items: Mapping[str, ItemInfo]) -> list[CandidateIn]:
    """Candidates p13n has no vector for but that came with text."""
    return [c for c in candidates if c.text and (c.item_id not in items or items[c.item_id].vector is None)]


def memories_for_prompt(config: MemoryConfig, dim: int, blob: bytes | MemoryTable | None, query: str,
                        query_vector: np.ndarray | None,
                        *, now_ms: int, max_tokens: int, count_tokens: Callable[[str], int],
                        remaining_ms: float = math.inf, spec: RetrievalSpec | None = None,
                        ) -> tuple[PackedMemories | None, bool]:  # fmt: skip
    """A user's stored memories (``blob``, :mod:`features.core.memory_codec`) for ``query``, packed into their share
    of ``max_tokens`` (``config.context_share``); ``(packed or None, skipped)``. ``blob`` may be an already decoded
    :class:`~features.core.memory_retrieval.MemoryTable` (a reader's cached copy). Skipped — the rung of the
    ladder that drops memories — when the share is below ``config.min_tokens``, less than
    ``config.min_budget_ms`` is left (``remaining_ms``), or the bytes are unreadable (never an error)."""
    if not config.enabled or not blob:
        return None, False
    share = int(max_tokens * config.context_share)
    if share < config.min_tokens or remaining_ms < config.min_budget_ms:
        return None, True
    if isinstance(blob, MemoryTable):
        table = blob
    else:
        try:
            table = MemoryTable(decode_columns(blob, dim))
        except MemoryFormatError:
            return None, True
    return retrieve(table, query, query_vector, now_ms=now_ms, max_tokens=share, count_tokens=count_tokens,
                    spec=spec), False
