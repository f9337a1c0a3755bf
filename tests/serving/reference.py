"""The expected answers of ``/v1/score`` and ``/v1/rewrite``, computed the plain way: synchronous reads of the
store, then the same pure steps the Personalizer calls (:mod:`features.core.personalize`, :mod:`features.core.prompt`).

The API's answers must equal these for the same state, so a fault in the request path's own parts (its caches,
the async pipeline, the deadline, the HTTP layer) shows up as a difference. It is test code, not a second way
to serve a request: :class:`serving.personalizer.Personalizer` is the only one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from features.core.memory_retrieval import RetrievalSpec
from features.core.personalize import CandidateIn, ScoredItem, memories_for_prompt, needs_text_vectors, rank_candidates
from features.core.prompt import PromptContext, build_context
from features.core.scorer import COVISIT_RECENCY
from features.core.state import UserState
from features.redis.store import RedisStore


@dataclass
class ScoreResult:
    items: list[ScoredItem]
    known_user: bool
    user: UserState | None


def score_candidates(store: RedisStore, tenant: str, user_id: str, candidates: Sequence[CandidateIn], *, now_ms: int,
                     weights, k: int | None = None, explain: bool = False, anchors: int = 50,
                     covisit_recency: float = COVISIT_RECENCY,
                     encode: Callable[[list[str]], np.ndarray] | None = None) -> ScoreResult:  # fmt: skip
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


def context_for(store: RedisStore, tenant: str, user_id: str, *, now_ms: int, max_tokens: int,
                count_tokens: Callable[[str], int], query_vector: np.ndarray | None = None,
                query: str | None = None) -> tuple[PromptContext, UserState | None]:  # fmt: skip
    """The prompt context for the user (reads the user and their history's items; with ``query``, the
    text of the request, their memories too)."""
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
