"""The request-path operations on top of the store: score candidates, build a prompt context.

Serving wraps these with budgets and HTTP; the demo and tests call them directly, so
"what the API returns" and "what features/ computes" are the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from features.memory_codec import MemoryFormatError, decode_columns
from features.memory_retrieval import MemoryTable, PackedMemories, RetrievalSpec, retrieve
from features.prompt import PromptContext, build_context
from features.scorer import COVISIT_RECENCY, Candidates, UserView, rank, score
from features.state import ItemInfo, UserState
from features.store import RedisStore
from p13n.config import MemoryConfig

__all__ = [
    "CandidateIn",
    "ScoredItem",
    "ScoreResult",
    "score_candidates",
    "rank_candidates",
    "needs_text_vectors",
    "candidates_from",
    "context_for",
    "memories_for_prompt",
]


@dataclass(frozen=True)
class CandidateIn:
    item_id: str
    text: str | None = None


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    features: dict[str, float] | None = None


@dataclass
class ScoreResult:
    items: list[ScoredItem]
    known_user: bool
    user: UserState | None


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
    ``covisit`` is the cosine co-visitation matrix (:meth:`~features.store.RedisStore.covisit_matrix`)."""
    cands = candidates_from(ids, items, popularity, dim, text_vectors)
    cands.covisit = covisit
    scored = score(view, cands, weights, covisit_recency=covisit_recency)
    out = []
    for i in rank(scored.scores, k):
        features = {name: round(float(values[i]), 6) for name, values in scored.features.items()} if explain else None
        out.append(ScoredItem(ids[i], round(float(scored.scores[i]), 6), features))
    return out


def needs_text_vectors(candidates: Sequence[CandidateIn], items: Mapping[str, ItemInfo]) -> list[CandidateIn]:
    """Candidates p13n has no vector for but that came with text."""
    return [c for c in candidates if c.text and (c.item_id not in items or items[c.item_id].vector is None)]


def score_candidates(
    store: RedisStore,
    tenant: str,
    user_id: str,
    candidates: Sequence[CandidateIn],
    *,
    now_ms: int,
    weights: Mapping[str, float],
    k: int | None = None,
    explain: bool = False,
    anchors: int = 50,
    covisit_recency: float = COVISIT_RECENCY,
    encode: Callable[[list[str]], np.ndarray] | None = None,
) -> ScoreResult:
    """Rank ``candidates`` for the user (non-personalized signals only when the user is unknown)."""
    ids = [c.item_id for c in candidates]
    user, items, popularity = store.read_request(tenant, user_id, ids, now_ms)
    view = user.view(now_ms, anchors) if user is not None else None
    covisit = store.covisit_matrix(tenant, list(view.recent_items), ids) if view is not None else None
    text_vectors = None
    missing = needs_text_vectors(candidates, items)
    if encode is not None and missing and view is not None:
        text_vectors = dict(zip([c.item_id for c in missing], encode([c.text or "" for c in missing])))
    ranked = rank_candidates(ids, items, popularity, view, covisit, dim=store.dim, weights=weights, k=k,
                             explain=explain, text_vectors=text_vectors, covisit_recency=covisit_recency)  # fmt: skip
    return ScoreResult(items=ranked, known_user=user is not None, user=user)


def context_for(
    store: RedisStore,
    tenant: str,
    user_id: str,
    *,
    now_ms: int,
    max_tokens: int,
    count_tokens: Callable[[str], int],
    query_vector: np.ndarray | None = None,
    user: UserState | None = None,
    query: str | None = None,
) -> tuple[PromptContext, UserState | None]:
    """The prompt context for the user (reads the user and their history's items; with ``query``, the
    text of the request, their memories too)."""
    if user is None:
        user = store.load_user(tenant, user_id)
    if user is None:
        return PromptContext(), None
    history_ids = sorted({h.item_id for h in user.history})
    items = store.get_items(tenant, history_ids) if history_ids else {}
    memories = None
    if query is not None and store.config.memory.enabled:
        blob = store.client.hget(store.keys.user(tenant, user_id), "m")
        memories, _ = memories_for_prompt(store.config.memory, store.dim, blob, query, query_vector, now_ms=now_ms,
                                          max_tokens=max_tokens, count_tokens=count_tokens,
                                          spec=RetrievalSpec(max_chars=store.config.memory.max_chars))  # fmt: skip
    return build_context(user, items, now_ms=now_ms, max_tokens=max_tokens, count_tokens=count_tokens,
                         query_vector=query_vector, memories=memories), user  # fmt: skip


def memories_for_prompt(config: MemoryConfig, dim: int, blob: bytes | None, query: str, query_vector: np.ndarray | None,
                        *, now_ms: int, max_tokens: int, count_tokens: Callable[[str], int],
                        remaining_ms: float = math.inf, spec: RetrievalSpec | None = None,
                        ) -> tuple[PackedMemories | None, bool]:  # fmt: skip
    """A user's stored memories (``blob``, :mod:`features.memory_codec`) for ``query``, packed into their share
    of ``max_tokens`` (``config.context_share``); ``(packed or None, skipped)``. Skipped — the rung of the
    ladder that drops memories — when the share is below ``config.min_tokens``, less than
    ``config.min_budget_ms`` is left (``remaining_ms``), or the bytes are unreadable (never an error)."""
    if not config.enabled or not blob:
        return None, False
    share = int(max_tokens * config.context_share)
    if share < config.min_tokens or remaining_ms < config.min_budget_ms:
        return None, True
    try:
        table = MemoryTable(decode_columns(blob, dim))
    except MemoryFormatError:
        return None, True
    return retrieve(table, query, query_vector, now_ms=now_ms, max_tokens=share, count_tokens=count_tokens,
                    spec=spec), False
