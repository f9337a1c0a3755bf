"""The Personalizer: score and rewrite under a latency budget, on redis.asyncio.

It runs the same reads (:class:`~features.redis.store.RedisStore` queue/parse pairs) and the
same ranking and prompt code (:mod:`features.core.personalize`, :mod:`features.core.prompt`) as
``features/`` called directly, so answers are identical for the same state. Every
stage gets the time that is left; a stage that fails or runs out of time is skipped
and named in ``degraded``:

* score: ``redis_timeout`` (the budget ran out first) or ``redis_unavailable`` (an error)
  → candidates in the given order, score 0; ``covisit_skipped``; ``candidate_encoding_skipped``;
* rewrite: ``query_encoding_skipped`` → context by recency (memories by BM25 alone);
  ``memory_skipped`` → no memories (their share of the budget, ``memory.context_share`` of
  ``max_context_tokens``, is below ``memory.min_tokens``, or less than ``memory.min_budget_ms`` is
  left); ``redis_timeout`` / ``redis_unavailable`` → messages unchanged.

``profile`` and ``delete`` have no degraded answer: when Redis fails they raise
:class:`~p13n.errors.StoreUnavailable` (this module is where redis-py's errors are translated).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import numpy as np
import redis
from ray.exceptions import RayError
from ray.serve.exceptions import RayServeException

from features.core.personalize import CandidateIn, rank_scored
from features.core.scorer import Candidates
from features.core.prompt import TokenCounter, build_context, query_text, rewrite_messages
from features.core.memory_codec import MemoryFormatError, decode_memories
from features.core.memory_retrieval import MemoryTable, PackedMemories, RetrievalSpec
from features.core.personalize import memories_for_prompt
from features.core.state_codec import decode_state
from features.redis.commands import queue
from features.redis.items import get_commands
from features.redis.store import RedisStore
from features.redis.users import memories_commands, state_and_token_command
from p13n.config import Config
from p13n.connections import async_redis_client
from p13n.clock import now_ms as wall_ms
from p13n.errors import StoreUnavailable
from serving.budget import Deadline, StageTimeout, within
from serving.responses import (AttributeHorizons, HistoryEntry, Horizon, RewriteAnswer, RewriteContext, ScoreAnswer,
                               ScoredItem, StatedPreference, UserMemory, UserProfile)  # fmt: skip
from serving.memory_tables import MemoryTables
from serving.score_reads import ScoreReads
from features.core.cache import TtlCache
from features.core.inspection import attribute_horizons

__all__ = ["Personalizer", "REDIS_ERRORS", "DEPENDENCY_ERRORS"]

#: RedisClusterException is no RedisError: a cluster client raises it when no node serves a slot.
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException, OSError, StageTimeout)
#: A dependency (Redis, the Encoder deployment) failed or ran out of time: skip the stage, say so.
DEPENDENCY_ERRORS = (*REDIS_ERRORS, RayError, RayServeException, asyncio.TimeoutError)
log = logging.getLogger("p13n.serving")
Encode = Callable[[str, float], Awaitable[np.ndarray]]  # (text, milliseconds left) -> vector


def _redis_reason(exc: BaseException) -> str:
    """``redis_timeout`` when the budget ran out first, ``redis_unavailable`` when Redis failed.

    >>> _redis_reason(StageTimeout("redis")), _redis_reason(ConnectionRefusedError())
    ('redis_timeout', 'redis_unavailable')
    """
    return "redis_timeout" if isinstance(exc, StageTimeout) else "redis_unavailable"


class Personalizer:
    """Request-path logic; ``encode(text, remaining_ms)`` is the async query encoder (local batcher or the
    Encoder deployment); it may refuse at once when it could not finish in time."""

    def __init__(self, config: Config, encode: Encode, count_tokens: Callable[[str], int], dim: int) -> None:
        self.config = config
        self.encode = encode
        # prompt lines repeat across requests (the header, section titles, popular items, memories' words): a
        # counter that keeps counts (serving.app passes one that counts memories' lines word by word)
        self.count_tokens = (count_tokens if isinstance(count_tokens, TokenCounter) and count_tokens.cache_size
                             else TokenCounter(count_tokens, cache_size=100_000))  # fmt: skip
        self.client = async_redis_client(config.redis)  # a cluster client with redis.cluster
        self.store = RedisStore(self.client, config, dim=dim)  # layout, queue/parse; executed here on asyncio
        self.reads = ScoreReads(self.client, self.store, config)  # held items and signals per tenant (bounded staleness)
        self.text_vectors: TtlCache[str, np.ndarray] = TtlCache(10_000, float("inf"))  # candidate texts seen before
        self.retrieval = RetrievalSpec(max_chars=config.memory.max_chars)
        self.memory_tables = MemoryTables(config.memory.cache_users, dim)  # decoded memories, by their ``mv`` token

    # --- reads ---------------------------------------------------------------------------------
    async def _user_and_history(self, tenant: str, user_id: str, *, cached: bool = False):
        """(user state or None, its history's items, its memories, their ``mv`` token or None). The memories are
        the stored bytes or None; with ``cached``, this replica's decoded table when the token still matches
        (:class:`~serving.memory_tables.MemoryTables`: then the blob does not travel)."""
        keys = self.store.keys
        pipe = self.client.pipeline(transaction=False)
        queue(pipe, [state_and_token_command(keys, tenant, user_id)])
        blob, token = (await pipe.execute())[0]
        if blob is None:
            return None, {}, None, None
        user = decode_state(blob, self.store.spec)
        ids = sorted({h.item_id for h in user.history})
        table = self.memory_tables.get(tenant, user_id, token) if cached else None
        pipe = self.client.pipeline(transaction=False)
        memories = [] if table is not None else memories_commands(keys, [(tenant, user_id)])
        queue(pipe, [*get_commands(keys, tenant, ids), *memories])
        replies = await pipe.execute()
        stored = table if table is not None else replies[len(ids)]
        return user, self.store.parse_items(replies[: len(ids)], ids), stored, token

    def _memories(self, blob: bytes | MemoryTable | None, query: str, query_vector, *, max_tokens: int, now_ms: int,
                  deadline: Deadline, key: tuple[str, str, bytes | None]) -> PackedMemories | None:  # fmt: skip
        """:func:`~features.core.personalize.memories_for_prompt` within the deadline; ``memory_skipped`` when it
        skipped them (too few tokens or too little time left, unreadable bytes). Bytes are decoded and kept
        under ``key`` (tenant, user, token) for the next rewrite."""
        if not self.config.memory.enabled or not blob:
            return None
        with deadline.stage("memory"):
            if isinstance(blob, bytes) and deadline.remaining_ms() >= self.config.memory.min_budget_ms:
                blob = self.memory_tables.decode(*key, blob)
            packed, skipped = memories_for_prompt(self.config.memory, self.store.dim, blob, query, query_vector,
                                                  now_ms=now_ms, max_tokens=max_tokens, count_tokens=self.count_tokens,
                                                  remaining_ms=deadline.remaining_ms(), spec=self.retrieval)  # fmt: skip
        if skipped:
            deadline.degrade("memory_skipped")
        return packed

    # --- score ---------------------------------------------------------------------------------
    async def score(self, tenant: str, user_id: str, candidates: Sequence[CandidateIn], *, k: int | None,
                    explain: bool, budget_ms: float, now_ms: int | None = None) -> ScoreAnswer:  # fmt: skip
        """Candidates ranked for the user (:mod:`serving.score_reads`: what is read, and how stale it may be)."""
        deadline = Deadline(budget_ms)
        now_ms = now_ms if now_ms is not None else wall_ms()
        ids = [c.item_id for c in candidates]
        table = self.reads.table(tenant)
        try:
            user, held = await within(deadline, "redis", self.reads.read(table, tenant, user_id, ids, now_ms))
        except REDIS_ERRORS as exc:
            if not isinstance(exc, StageTimeout):
                log.warning("redis read failed: %s: %s", type(exc).__name__, exc)
            deadline.degrade(_redis_reason(exc))
            return ScoreAnswer.in_given_order(ids, k, deadline.degraded, deadline.finish())
        view = user.view(now_ms, self.config.scoring.covisit_anchors) if user is not None else None
        covisit = None
        vectors = held.vectors
        if view is not None:
            tasks = {"covisit": self.reads.covisit(table, tenant, list(view.recent_items), ids, held.ids)}
            missing = [c for c, has in zip(candidates, held.has_vector.tolist()) if c.text and not has]
            if missing:
                tasks["encode"] = self._encode_many([c.text or "" for c in missing], deadline.remaining_ms() - 1)
            results, _ = await self._gather(deadline, tasks)
            covisit = results.get("covisit")
            if covisit is None:
                deadline.degrade("covisit_skipped")
            if missing:
                encoded = results.get("encode")
                if encoded is None:
                    deadline.degrade("candidate_encoding_skipped")
                else:
                    text_vectors = dict(zip([c.item_id for c in missing], encoded))
                    for n in np.flatnonzero(~held.has_vector).tolist():  # as candidates_from fills them in
                        if ids[n] in text_vectors:
                            vectors[n] = text_vectors[ids[n]]
        with deadline.stage("score"):
            cands = Candidates(item_ids=ids, vectors=vectors, attribute_keys=(), popularity=held.popularity,
                               covisit=covisit, key_index=held.key_index, key_numbers=table.attribute_keys)  # fmt: skip
            ranked = rank_scored(cands, view, weights=self.config.scoring.weights, k=k, explain=explain,
                                 covisit_recency=self.config.scoring.covisit_recency)  # fmt: skip
        out = [ScoredItem(item.item_id, item.score, item.features) if explain else ScoredItem(item.item_id, item.score)
               for item in ranked]  # fmt: skip
        if user is None:
            deadline.degrade("unknown_user")
        return ScoreAnswer(out, deadline.degraded, deadline.finish())

    async def _encode_many(self, texts: list[str], remaining_ms: float) -> list[np.ndarray]:
        async def one(text: str) -> np.ndarray:
            cached = self.text_vectors.get(text)
            if cached is None:
                cached = await self.encode(text, remaining_ms)
                self.text_vectors.put(text, cached)
            return cached

        return list(await asyncio.gather(*(one(t) for t in texts)))

    async def _gather(self, deadline: Deadline, tasks: dict[str, Awaitable]) -> tuple[dict, dict[str, BaseException]]:
        """Run stages concurrently within the deadline: (results, failures) — a failed or late stage is
        absent from the results and named in the failures."""
        names = list(tasks)
        if len(names) == 1:  # awaited in place: gather would wrap it in a task (more trips through the event loop)
            try:
                results: list = [await within(deadline, names[0], tasks[names[0]])]
            except Exception as exc:  # as gather(return_exceptions=True) returns it; a cancellation propagates
                results = [exc]
        else:
            results = await asyncio.gather(*(within(deadline, n, tasks[n]) for n in names), return_exceptions=True)
        out: dict = {}
        failed: dict[str, BaseException] = {}
        for name, result in zip(names, results):
            if isinstance(result, DEPENDENCY_ERRORS):
                if not isinstance(result, StageTimeout):
                    log.warning("stage %s failed: %s: %s", name, type(result).__name__, result)
                failed[name] = result
                continue
            if isinstance(result, BaseException):
                raise result  # a bug, not a slow dependency
            out[name] = result
        return out, failed

    # --- rewrite -------------------------------------------------------------------------------
    async def rewrite(self, tenant: str, user_id: str, messages: list[dict], *, max_tokens: int,
                      budget_ms: float, now_ms: int | None = None,
                      context_role: str | None = None) -> RewriteAnswer:  # fmt: skip
        """``messages`` with the user's context added as ``context_role`` (default ``serving.context_role``;
        see :func:`features.core.prompt.rewrite_messages`)."""
        deadline = Deadline(budget_ms)
        now_ms = now_ms if now_ms is not None else wall_ms()
        query = query_text(messages)
        tasks: dict[str, Awaitable] = {"redis": self._user_and_history(tenant, user_id, cached=True)}
        if query.strip():
            tasks["encode"] = self.encode(query, deadline.remaining_ms() - 1)
        results, failed = await self._gather(deadline, tasks)
        if "redis" not in results:
            deadline.degrade(_redis_reason(failed["redis"]))
            return RewriteAnswer.unchanged(messages, deadline.degraded, deadline.finish())
        if query.strip() and "encode" not in results:
            deadline.degrade("query_encoding_skipped")
        user, items, stored_memories, token = results["redis"]
        memories = self._memories(stored_memories, query, results.get("encode"), max_tokens=max_tokens, now_ms=now_ms,
                                  deadline=deadline, key=(tenant, user_id, token)) if user is not None else None  # fmt: skip
        with deadline.stage("build"):
            context = build_context(user, items, now_ms=now_ms, max_tokens=max_tokens, count_tokens=self.count_tokens,
                                    query_vector=results.get("encode"), memories=memories)  # fmt: skip
            rewritten = rewrite_messages(messages, context, context_role or self.config.serving.context_role)
        if user is None:
            deadline.degrade("unknown_user")
        return RewriteAnswer(rewritten, RewriteContext.of(context), deadline.degraded, deadline.finish())

    # --- users ---------------------------------------------------------------------------------
    async def profile(self, tenant: str, user_id: str, now_ms: int | None = None) -> UserProfile | None:
        """The user's state, None for an unknown user; raises :class:`StoreUnavailable`.

        ``as_of_ms`` is the read-out time (ages are ``as_of_ms - ts_ms``); ``attribute_horizons`` lists the top
        attributes' strengths at the shortest and the longest horizon (:func:`features.core.inspection.attribute_horizons`)."""
        now_ms = now_ms if now_ms is not None else wall_ms()
        try:
            user, items, stored_memories, _ = await self._user_and_history(tenant, user_id)
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
        if user is None:
            return None
        clock = user.interest_clock(now_ms)
        return UserProfile(
            user_id=user_id,
            tenant=tenant,
            as_of_ms=now_ms,
            events_applied=user.events_applied,
            attributes={k: round(v, 4) for k, v in user.attribute_preferences(now_ms).items()},
            attribute_horizons=AttributeHorizons.of(attribute_horizons(user, items, now_ms)),
            event_counts={k: round(v, 4) for k, v in user.event_counts(now_ms).items()},
            preferences=[StatedPreference(p.text, p.ts_ms) for p in user.preferences],
            history=[HistoryEntry(h.item_id, h.type, h.ts_ms, items[h.item_id].text if h.item_id in items else None)
                     for h in user.history],
            interest_clock_utc=[round(float(x), 4) for x in clock],
            horizons={name: Horizon(bool(np.any(vec))) for name, vec in user.embeddings(now_ms).items()},
            last_applied_offsets={str(k): v for k, v in user.offsets.items()},
            memories=self._latest_memories(stored_memories),
        )  # fmt: skip

    def _latest_memories(self, blob: bytes | None, limit: int = 20) -> list[UserMemory]:
        """The ``limit`` memories said last, newest first (an unreadable blob lists none)."""
        if not blob:
            return []
        try:
            memories = decode_memories(blob, self.store.memory_spec, self.store.dim).memories()
        except MemoryFormatError as exc:
            log.warning("unreadable memories not listed: %s", exc)
            return []
        memories.sort(key=lambda m: m.mentions[-1], reverse=True)
        return [UserMemory(m.mentions[-1].event_id, m.event_ids, m.text, m.role, m.last_ms, m.mentions[-1].session_id)
                for m in memories[:limit]]

    async def delete(self, tenant: str, user_id: str) -> bool:
        """Remove every key of the user; False when there was none. Raises :class:`StoreUnavailable`."""
        self.memory_tables.drop(tenant, user_id)
        try:
            return bool(await self.client.delete(self.store.keys.user(tenant, user_id)))
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.client.ping(), timeout=0.5))
        except (*REDIS_ERRORS, asyncio.TimeoutError):
            return False

    async def close(self) -> None:
        await self.reads.close()
        await self.client.aclose()
