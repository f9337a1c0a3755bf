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

from features.core.personalize import CandidateIn, needs_text_vectors, rank_candidates
from features.core.signal_cache import SignalTable
from features.core.prompt import TokenCounter, build_context, query_text, rewrite_messages
from features.core.memory_codec import MemoryFormatError, decode_memories
from features.core.memory_retrieval import MemoryTable, PackedMemories, RetrievalSpec
from features.core.personalize import memories_for_prompt
from features.core.state import ItemInfo
from features.core.state_codec import decode_state
from features.redis.store import RedisStore
from p13n.config import Config
from p13n.connections import async_redis_client
from p13n.clock import now_ms as wall_ms
from p13n.errors import StoreUnavailable
from serving.budget import Deadline, StageTimeout, within
from serving.responses import (AttributeHorizons, HistoryEntry, Horizon, RewriteAnswer, RewriteContext, ScoreAnswer,
                               ScoredItem, StatedPreference, UserMemory, UserProfile)  # fmt: skip
from serving.memory_tables import MemoryTables
from features.core.cache import TtlCache
from features.core.inspection import attribute_horizons

__all__ = ["Personalizer", "REDIS_ERRORS", "DEPENDENCY_ERRORS"]

#: RedisClusterException is no RedisError: a cluster client raises it when no node serves a slot.
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException, OSError, StageTimeout)
#: A dependency (Redis, the Encoder deployment) failed or ran out of time: skip the stage, say so.
DEPENDENCY_ERRORS = (*REDIS_ERRORS, RayError, RayServeException, asyncio.TimeoutError)
log = logging.getLogger("p13n.serving")
# Co-visitation counts move slowly: rows and counts are trusted for 30 s (bounded staleness), which saves
# the round trip and the parse of up to 5 anchor rows of 100 scored members per request (at 5 s, most
# anchors of MovieLens users had expired before their user came back).
COVISIT_TTL_S = 30.0
# Popularity (forward-decayed, tau of days) is trusted for 5 s: a new item's first events show in its score at
# most 5 s late, and the ZMSCORE of ~100 candidates (~0.3 ms of CPU per /v1/score here) is read only for items
# not held; the landmark is read on every request, so a rescale is never mixed with older scores.
POPULARITY_TTL_S = 5.0
Encode = Callable[[str, float], Awaitable[np.ndarray]]  # (text, milliseconds left) -> vector


def _redis_reason(exc: BaseException) -> str:
    """``redis_timeout`` when the budget ran out first, ``redis_unavailable`` when Redis failed.

    >>> _redis_reason(StageTimeout("redis")), _redis_reason(ConnectionRefusedError())
    ('redis_timeout', 'redis_unavailable')
    """
    return "redis_timeout" if isinstance(exc, StageTimeout) else "redis_unavailable"


def _score_pairs(reply: list) -> tuple[list[str], list[float]]:
    """(members, scores) of a raw ``ZRANGE … WITHSCORES`` reply: RESP3 pairs or RESP2's flat list.

    >>> _score_pairs([[b"a", 2.0], [b"b", 1.0]]), _score_pairs([b"a", b"2", b"b", b"1"])
    ((['a', 'b'], [2.0, 1.0]), (['a', 'b'], [2.0, 1.0]))
    """
    if reply and isinstance(reply[0], list):
        return [m.decode() for m, _ in reply], [float(score) for _, score in reply]
    return [m.decode() for m in reply[0::2]], [float(score) for score in reply[1::2]]


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
        self.items: TtlCache[str, ItemInfo] = TtlCache(config.consumer.item_cache_size, config.consumer.item_cache_ttl_s)
        self.text_vectors: TtlCache[str, np.ndarray] = TtlCache(10_000, float("inf"))  # candidate texts seen before
        self.signals: dict[str, SignalTable] = {}  # tenant -> its co-visitation rows and counts, popularity
        self.retrieval = RetrievalSpec(max_chars=config.memory.max_chars)
        self.memory_tables = MemoryTables(config.memory.cache_users, dim)  # decoded memories, by their ``mv`` token

    # --- reads ---------------------------------------------------------------------------------
    async def _read(self, tenant: str, user_id: str, ids: Sequence[str], now_ms: int):
        cached: dict[str, ItemInfo] = {}
        fetch: list[str] = []
        for item_id in ids:
            info = self.items.get(f"{tenant}\0{item_id}")
            if info is None:
                fetch.append(item_id)
            else:
                cached[item_id] = info
        table = self._signal_table(tenant)
        item_ids = table.ids(ids)
        unread = table.stale_popularity(ids, item_ids)
        pipe = self.client.pipeline(transaction=False)
        self.store.queue_request(pipe, tenant, user_id, unread, fetch)
        replies = await pipe.execute()
        user, fetched, _ = self.store.parse_request(replies, unread, fetch, now_ms)
        for item_id, info in fetched.items():
            self.items.put(f"{tenant}\0{item_id}", info)
        landmark = float(replies[1]) if replies[1] is not None else None
        table.put_popularity(unread, replies[2] if unread else [], landmark)
        return user, {**cached, **fetched}, await self._popularity(tenant, table, ids, item_ids, landmark, now_ms)

    async def _popularity(self, tenant: str, table: SignalTable, ids: Sequence[str], item_ids: np.ndarray,
                          landmark: float | None, now_ms: int) -> np.ndarray:  # fmt: skip
        """The candidates' popularity at ``now_ms`` from the held scores (as ``RedisStore.parse_request`` computes
        it); when the landmark moved since some were read, all are read again."""
        if landmark is None or not ids:
            return np.zeros(len(ids), dtype=np.float64)
        stored = table.popularity(item_ids, landmark)
        if stored is None:
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(self.store.keys.global_meta(tenant), "landmark")
            pipe.zmscore(self.store.keys.popularity(tenant), list(ids))
            raw_landmark, scores = await pipe.execute()
            landmark = float(raw_landmark) if raw_landmark is not None else None
            table.put_popularity(ids, scores, landmark)
            if landmark is None:
                return np.zeros(len(ids), dtype=np.float64)
            stored = np.array([s or 0.0 for s in scores], dtype=np.float64)
        factor = np.exp(-(now_ms / 1000.0 - landmark) / self.config.state.popularity_tau_s)
        return stored * factor

    def _signal_table(self, tenant: str) -> SignalTable:
        table = self.signals.get(tenant)
        if table is None or table.full:  # a fresh table: requests in flight keep the ids of the old one
            table = self.signals[tenant] = SignalTable(COVISIT_TTL_S, popularity_ttl_s=POPULARITY_TTL_S)
        return table

    async def _covisit(self, tenant: str, anchors: Sequence[str], ids: Sequence[str]) -> np.ndarray:
        """Cosine co-visitation (:func:`~features.core.signals.cosine`); each anchor's (top-M bounded) row and
        each item's occurrence count are held for ``COVISIT_TTL_S`` (:class:`~features.core.signal_cache.SignalTable`),
        so hot anchors and items cost no round trip."""
        if not anchors or not ids:
            return np.zeros((len(anchors), len(ids)))
        table = self._signal_table(tenant)
        items = [*anchors, *ids]
        item_ids = table.ids(items)
        missing = table.stale_rows(anchors)
        uncounted = table.stale_counts(items, item_ids)
        if missing or uncounted:
            pipe = self.client.pipeline(transaction=False)
            for anchor in missing:  # raw ZRANGE: redis-py's WITHSCORES callback re-parses every score (RESP3)
                pipe.execute_command("ZRANGE", self.store.keys.covisit(tenant, anchor), 0, -1, "WITHSCORES")
            if uncounted:
                pipe.hmget(self.store.keys.covisit_counts(tenant), uncounted)
            replies = await pipe.execute()
            for anchor, reply in zip(missing, replies):
                table.put_row(anchor, *_score_pairs(reply))
            if uncounted:
                table.put_counts(uncounted, replies[len(missing)])
        return table.cosine(anchors, ids, item_ids)

    async def _user_and_history(self, tenant: str, user_id: str, *, cached: bool = False):
        """(user state or None, its history's items, its memories, their ``mv`` token or None). The memories are
        the stored bytes or None; with ``cached``, this replica's decoded table when the token still matches
        (:class:`~serving.memory_tables.MemoryTables`: then the blob does not travel)."""
        key = self.store.keys.user(tenant, user_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(key, "s", "mv")
        blob, token = (await pipe.execute())[0]
        if blob is None:
            return None, {}, None, None
        user = decode_state(blob, self.store.spec)
        ids = sorted({h.item_id for h in user.history})
        table = self.memory_tables.get(tenant, user_id, token) if cached else None
        pipe = self.client.pipeline(transaction=False)
        self.store.queue_items(pipe, tenant, ids)
        if table is None:
            pipe.hget(key, "m")  # read after the token: never older than it
        replies = await pipe.execute()
        memories = table if table is not None else replies[len(ids)]
        return user, self.store.parse_items(replies[: len(ids)], ids), memories, token

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
        deadline = Deadline(budget_ms)
        now_ms = now_ms if now_ms is not None else wall_ms()
        ids = [c.item_id for c in candidates]
        try:
            user, items, popularity = await within(deadline, "redis", self._read(tenant, user_id, ids, now_ms))
        except REDIS_ERRORS as exc:
            if not isinstance(exc, StageTimeout):
                log.warning("redis read failed: %s: %s", type(exc).__name__, exc)
            deadline.degrade(_redis_reason(exc))
            return ScoreAnswer.in_given_order(ids, k, deadline.degraded, deadline.finish())
        view = user.view(now_ms, self.config.scoring.covisit_anchors) if user is not None else None
        covisit = None
        text_vectors = None
        if view is not None:
            tasks = {"covisit": self._covisit(tenant, list(view.recent_items), ids)}
            missing = needs_text_vectors(candidates, items)
            if missing:
                tasks["encode"] = self._encode_many([c.text or "" for c in missing], deadline.remaining_ms() - 1)
            results, _ = await self._gather(deadline, tasks)
            covisit = results.get("covisit")
            if covisit is None:
                deadline.degrade("covisit_skipped")
            if missing:
                vectors = results.get("encode")
                if vectors is None:
                    deadline.degrade("candidate_encoding_skipped")
                else:
                    text_vectors = dict(zip([c.item_id for c in missing], vectors))
        with deadline.stage("score"):
            ranked = rank_candidates(ids, items, popularity, view, covisit, dim=self.store.dim,
                                     weights=self.config.scoring.weights, k=k, explain=explain,
                                     text_vectors=text_vectors, covisit_recency=self.config.scoring.covisit_recency)  # fmt: skip
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
        await self.client.aclose()
