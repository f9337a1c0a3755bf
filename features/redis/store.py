"""Redis store of user state, item vectors and global signals (layout in :mod:`features.redis.keys`).

The client (and its connection pool) is passed in — built from configuration by
the caller, never at import. Writes go through the Lua scripts of
:mod:`features.redis.scripts`, so a user's batch is applied atomically and exactly
once; reads for a request are pipelined (one round trip for the user's state,
the candidates' vectors and their popularity; a second one for co-visitation,
whose anchors are only known once the user's history has been read).
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import msgspec
import numpy as np

from features.redis.deferred import DeferredPipeline, is_cluster_client
from features.redis.globals_write import globals_call
from features.redis.keys import KeyLayout
from features.core.memory import MemorySet, MemorySpec
from features.core.memory_codec import decode_memories, encode_memories
from features.redis.scripts import APPLY_USERS
from features.core.signals import cosine
from features.core.state import ItemInfo, StateSpec, UserState
from features.core.state_codec import decode_state, encode_state
from p13n.config import Config

__all__ = ["RedisStore", "WriteBatch", "UserWrite", "new_version_token", "new_version_tokens", "APPLIED", "CONFLICT"]

APPLIED, CONFLICT = 1, -1
USERS_PER_CALL = 50


class UserWrite(NamedTuple):
    """A folded user state to write, guarded by the version it was read at (a compare-and-set).

    The state carries the Kafka offsets it applied (``UserState.offsets``), so the version guards them
    too: the one record of what was applied to the user.

    Versions are random tokens, not counters (0: no state yet): a writer that chains a write on one
    of its own not yet acknowledged writes expects that write's token, which another writer cannot
    have produced, so the chained write fails whenever the one before it did."""

    tenant: str
    user_id: str
    expected_version: int
    state: UserState
    new_version: int | None = None  # None: a fresh random token


def new_version_token() -> int:
    """A random version token, never 0 (62 bits: two writers picking the same one is a ~1e-18 chance).

    >>> 0 < new_version_token() < 2**62 + 1
    True
    """
    return secrets.randbits(62) + 1


def new_version_tokens(n: int) -> list[int]:
    """``n`` tokens as :func:`new_version_token` gives them, from one read of the OS's random source
    (one ``os.urandom`` call per token was ~2% of the consumer's time at one event per user write).

    >>> tokens = new_version_tokens(3)
    >>> len(tokens), all(0 < t < 2**62 + 1 for t in tokens)
    (3, True)
    """
    return [(word >> 2) + 1 for word in struct.unpack(f"<{n}Q", os.urandom(8 * n))]


class _ItemMeta(msgspec.Struct, array_like=True):
    text: str | None
    attributes: dict[str, str | int | float | bool | list[str]]


_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(_ItemMeta)


class RedisStore:
    """All of p13n's Redis access. ``client`` is a redis-py ``Redis`` (or ``RedisCluster``)."""

    def __init__(self, client, config: Config, dim: int) -> None:
        self.client = client
        self.config = config
        self.keys = KeyLayout(config.redis.prefix)
        self.spec = StateSpec.from_config(config.state, dim=dim)
        self.dim = dim
        self.vector_dtype = np.dtype(config.state.vector_dtype).newbyteorder("<")
        self.memory_spec = MemorySpec.from_config(config.memory)
        self.ttl_ms = int(config.state.user_ttl_days * 86_400_000)
        # Users written per script call: their keys are in different cluster slots, so one per call on
        # a Redis Cluster; elsewhere a few dozen share a call (one command and one reply to handle
        # instead of many), few enough to keep Redis responsive to readers meanwhile (~0.5 ms).
        self.users_per_call = 1 if is_cluster_client(client) else USERS_PER_CALL

    # --- users -------------------------------------------------------------------------------
    def read_users(self, users: Sequence[tuple[str, str]]) -> list[tuple[int, UserState | None]]:
        """(version, state or None) of each (tenant, user_id), in one round trip; raises the first
        command error (as a redis-py pipeline does).

        Sent as raw commands on a :class:`~features.redis.deferred.DeferredPipeline`: redis-py's pipeline
        spent ~16 µs of CPU per user on queueing and reply callbacks, this ~6-10 (4000 users, load ~12),
        ~5% of the consumer at 1.3 events per user write, where most users of a poll are read."""
        if not users:
            return []
        with DeferredPipeline(self.client) as pipe:
            pipe.send([("HMGET", self.keys.user(tenant, user_id), "v", "s") for tenant, user_id in users])
            replies = pipe.replies()
        out: list[tuple[int, UserState | None]] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            version, blob = reply
            if blob is None:
                out.append((0, None))
            else:
                out.append((int(version), decode_state(blob, self.spec)))
        return out

    def load_user(self, tenant: str, user_id: str) -> UserState | None:
        return self.read_users([(tenant, user_id)])[0][1]

    def begin_writes(self, pipe: DeferredPipeline | None = None) -> WriteBatch:
        """A batch of script calls, each sent as soon as it is added and acknowledged together; on
        ``pipe`` (shared with earlier batches, whose replies are read first) or a connection of its own."""
        return WriteBatch(self, pipe)

    def _run_scripts(self, calls: Sequence[tuple[str, list, list]]) -> list:
        """EVAL each (script, keys, args) in one round trip."""
        batch = self.begin_writes()
        batch.send(calls)
        return batch.finish()

    def _users_call(self, writes: Sequence[UserWrite]) -> tuple[str, list, list]:
        keys = [self.keys.user(w.tenant, w.user_id) for w in writes]
        args: list = [self.ttl_ms]
        for w in writes:
            version = w.new_version or new_version_token()
            args += (w.expected_version, version, encode_state(w.state), self._memories_blob(w.state))
        return (APPLY_USERS, keys, args)

    def _memories_blob(self, state: UserState) -> bytes:
        """The user's memories to store with the state, or b"" when they did not change (left as stored)."""
        memories = state.memories
        if memories is None or not memories.changed:
            return b""
        memories.changed = False  # a write that fails is re-folded from what Redis holds
        return encode_memories(memories, self.config.memory.vector_type)

    def read_memories(self, users: Sequence[tuple[str, str]]) -> list[MemorySet]:
        """Each (tenant, user_id)'s memories (empty when none are stored), in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for tenant, user_id in users:
            pipe.hget(self.keys.user(tenant, user_id), "m")
        return [decode_memories(blob, self.memory_spec, self.dim) if blob else MemorySet(self.memory_spec, self.dim)
                for blob in pipe.execute()]  # fmt: skip

    def write_users(self, writes: Sequence[UserWrite]) -> list[int]:
        """Apply each write atomically; returns APPLIED or CONFLICT per write."""
        with self.begin_writes() as batch:
            refs = batch.add_users(writes)
            replies = batch.finish()
        return [WriteBatch.user_result(replies, ref)[0] for ref in refs]

    def delete_user(self, tenant: str, user_id: str) -> bool:
        """Remove every key of the user (there is one); True if the user existed.

        The user's past contributions to the tenant-wide popularity and co-visitation
        counts are anonymous aggregates and stay."""
        return bool(self.client.delete(self.keys.user(tenant, user_id)))

    # --- global signals ----------------------------------------------------------------------
    def apply_globals(
        self,
        tenant: str,
        partition: int,
        offset: int,
        popularity: Iterable[tuple],
        covisits: Iterable[tuple],
    ) -> bool:
        """Add a batch's popularity ``(item, ts_ms, weight, …)`` and co-visitation ``(a, b[, delta], …)`` deltas
        once per (tenant, partition, offset); True if applied, False if this offset was applied before."""
        runs = [(pair[1], (pair[0],), float(pair[2]) if len(pair) > 2 else 1.0, "", 0.0) for pair in covisits]
        return self.apply_globals_runs(tenant, partition, offset, runs, popularity)

    def apply_globals_runs(self, tenant: str, partition: int, offset: int, covisit_runs: Iterable[tuple],
                           popularity: Iterable[tuple] = ()) -> bool:  # fmt: skip
        """:meth:`apply_globals` with co-visits as :class:`~features.core.history.CovisitRun` (occurrences too)."""
        return bool(self._run_scripts([self.globals_call(tenant, partition, offset, popularity, covisit_runs)])[0])

    def globals_call(self, tenant: str, partition: int, offset: int, popularity: Iterable[tuple],
                     covisit_runs: Iterable[tuple], *, force: bool = False) -> tuple[str, list, list]:  # fmt: skip
        """:func:`features.redis.globals_write.globals_call` with this store's keys and state settings."""
        return globals_call(self.keys, self.config.state, tenant, partition, offset, popularity, covisit_runs, force=force)

    def read_global_offsets(self, pairs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Last offset whose global deltas are applied, per (tenant, partition); -1 if none."""
        pipe = self.client.pipeline(transaction=False)
        for tenant, partition in pairs:
            pipe.hget(self.keys.global_offsets(tenant), str(partition))
        return {pair: int(v) if v is not None else -1 for pair, v in zip(pairs, pipe.execute())}

    def popularity(self, tenant: str, item_ids: Sequence[str], now_ms: int) -> np.ndarray:
        pipe = self.client.pipeline(transaction=False)
        self._queue_popularity(pipe, tenant, item_ids)
        return self._popularity_from(pipe.execute(), now_ms)

    def _queue_popularity(self, pipe, tenant: str, item_ids: Sequence[str]) -> None:
        pipe.hget(self.keys.global_meta(tenant), "landmark")
        if item_ids:
            pipe.zmscore(self.keys.popularity(tenant), list(item_ids))
        else:  # ZMSCORE needs a member; the stand-in has a key (a cluster client cannot route ECHO)
            pipe.exists(self.keys.popularity(tenant))

    def _popularity_from(self, replies: Sequence, now_ms: int) -> np.ndarray:
        landmark, scores = replies
        if landmark is None or not isinstance(scores, list) or not scores:
            return np.zeros(len(scores) if isinstance(scores, list) else 0, dtype=np.float64)
        factor = np.exp(-(now_ms / 1000.0 - float(landmark)) / self.config.state.popularity_tau_s)
        return np.array([s or 0.0 for s in scores], dtype=np.float64) * factor

    def covisit_matrix(self, tenant: str, anchors: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Cosine co-visitation ``c(a, x) / sqrt(n(a)·n(x))`` (:func:`~features.core.signals.cosine`), shape
        (len(anchors), len(candidates)) — what the scorer's ``covisit`` feature weighs."""
        if not anchors or not candidates:
            return np.zeros((len(anchors), len(candidates)), dtype=np.float64)
        pipe = self.client.pipeline(transaction=False)
        self.queue_covisit(pipe, tenant, anchors, candidates)
        return self.parse_covisit(pipe.execute(), len(anchors), len(candidates))

    def covisit_neighbours(self, tenant: str, item_id: str) -> dict[str, float]:
        """The item's co-visitation row: neighbour -> count (at most ``state.covisit_top_m``)."""
        pairs = self.client.zrevrange(self.keys.covisit(tenant, item_id), 0, -1, withscores=True)
        return {m.decode(): float(s) for m, s in pairs}

    def covisit_occurrences(self, tenant: str, item_ids: Sequence[str]) -> np.ndarray:
        """How often each item occurred in co-visitation (its ``n``; 0 when never)."""
        if not item_ids:
            return np.zeros(0, dtype=np.float64)
        return _occurrences(self.client.hmget(self.keys.covisit_counts(tenant), list(item_ids)))

    # --- items -------------------------------------------------------------------------------
    def put_items(self, tenant: str, items: Mapping[str, ItemInfo]) -> None:
        """Store vectors (where given) and text/attributes of items."""
        pipe = self.client.pipeline(transaction=False)
        for item_id, info in items.items():
            mapping = {f"m:{item_id}": _meta_encoder.encode(_ItemMeta(info.text, dict(info.attributes)))}
            if info.vector is not None:
                mapping[f"v:{item_id}"] = np.asarray(info.vector, dtype=self.vector_dtype).tobytes()
            pipe.hset(self.keys.item_shard(tenant, item_id), mapping=mapping)
        pipe.execute()

    def put_item_vectors(self, tenant: str, items: Mapping[str, tuple[str, np.ndarray]]) -> None:
        """Store vectors of first-seen items embedded from event text; catalog text and
        attributes already stored are kept (the text is only set when none is there)."""
        pipe = self.client.pipeline(transaction=False)
        for item_id, (text, vector) in items.items():
            key = self.keys.item_shard(tenant, item_id)
            pipe.hset(key, f"v:{item_id}", np.asarray(vector, dtype=self.vector_dtype).tobytes())
            pipe.hsetnx(key, f"m:{item_id}", _meta_encoder.encode(_ItemMeta(text, {})))
        pipe.execute()

    def delete_items(self, tenant: str, item_ids: Iterable[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hdel(self.keys.item_shard(tenant, item_id), f"v:{item_id}", f"m:{item_id}")
        pipe.execute()

    def get_items(self, tenant: str, item_ids: Sequence[str]) -> dict[str, ItemInfo]:
        """Known items among ``item_ids`` (unknown ones are absent)."""
        pipe = self.client.pipeline(transaction=False)
        self.queue_items(pipe, tenant, item_ids)
        return self.parse_items(pipe.execute(), item_ids)

    def queue_items(self, pipe, tenant: str, item_ids: Sequence[str]) -> None:
        for item_id in item_ids:
            pipe.hmget(self.keys.item_shard(tenant, item_id), f"v:{item_id}", f"m:{item_id}")

    def parse_items(self, replies: Sequence, item_ids: Sequence[str]) -> dict[str, ItemInfo]:
        found: dict[str, ItemInfo] = {}
        for item_id, (vector, meta) in zip(item_ids, replies):
            if vector is None and meta is None:
                continue
            decoded = _meta_decoder.decode(meta) if meta is not None else _ItemMeta(None, {})
            vec = np.frombuffer(vector, dtype=self.vector_dtype).astype(np.float32) if vector is not None else None
            found[item_id] = ItemInfo(vector=vec, attributes=decoded.attributes, text=decoded.text)
        return found

    def items_with_vectors(self, tenant: str, item_ids: Sequence[str]) -> set[str]:
        """Which of ``item_ids`` already have a stored vector (so need no encoding)."""
        pipe = self.client.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hexists(self.keys.item_shard(tenant, item_id), f"v:{item_id}")
        return {item_id for item_id, present in zip(item_ids, pipe.execute()) if present}

    # --- request path ------------------------------------------------------------------------
    # Each read is a (queue, parse) pair so the async reader of the Serve app runs the very same
    # commands and decoding on a redis.asyncio pipeline.
    def queue_request(self, pipe, tenant: str, user_id: str, popular_ids: Sequence[str], item_ids: Sequence[str]) -> None:
        pipe.hget(self.keys.user(tenant, user_id), "s")
        self._queue_popularity(pipe, tenant, popular_ids)
        self.queue_items(pipe, tenant, item_ids)

    def parse_request(
        self, replies: Sequence, popular_ids: Sequence[str], item_ids: Sequence[str], now_ms: int
    ) -> tuple[UserState | None, dict[str, ItemInfo], np.ndarray]:
        blob = replies[0]
        user = decode_state(blob, self.spec) if blob is not None else None
        popularity = self._popularity_from(replies[1:3], now_ms)
        items = self.parse_items(replies[3:], item_ids)
        return user, items, popularity

    def queue_covisit(self, pipe, tenant: str, anchors: Sequence[str], candidates: Sequence[str]) -> None:
        for anchor in anchors:
            pipe.zmscore(self.keys.covisit(tenant, anchor), list(candidates))
        pipe.hmget(self.keys.covisit_counts(tenant), [*anchors, *candidates])

    @staticmethod
    def parse_covisit(rows: Sequence, anchors: int, candidates: int) -> np.ndarray:
        """The cosine matrix from :meth:`queue_covisit`'s replies (rows, then the occurrences)."""
        if not rows or not anchors:
            return np.zeros((anchors, candidates), dtype=np.float64)
        counts = np.array([[c or 0.0 for c in row] for row in rows[:anchors]], dtype=np.float64)
        n = _occurrences(rows[anchors])
        return cosine(counts, n[:anchors], n[anchors:])

    def read_request(
        self, tenant: str, user_id: str, candidate_ids: Sequence[str], now_ms: int
    ) -> tuple[UserState | None, dict[str, ItemInfo], np.ndarray]:
        """The user's state, the candidates' items and their popularity — one round trip."""
        pipe = self.client.pipeline(transaction=False)
        self.queue_request(pipe, tenant, user_id, candidate_ids, candidate_ids)
        return self.parse_request(pipe.execute(), candidate_ids, candidate_ids, now_ms)


def _occurrences(replies: Sequence) -> np.ndarray:
    return np.array([float(v) if v is not None else 0.0 for v in replies], dtype=np.float64)


class WriteBatch:
    """Script calls sent as soon as they are added (:class:`~features.redis.deferred.DeferredPipeline`)
    and acknowledged together by :meth:`finish`; Redis applies them in the order they were added.

    Calls carry the script itself (EVAL), not its SHA: a restarted or flushed Redis would answer
    EVALSHA with NOSCRIPT, and re-running the failed calls afterwards could apply them after later
    calls that did run (a later batch's deltas raising the partition offset past them). The few
    KB per call are small beside the user states, and Redis compiles each script once."""

    def __init__(self, store: RedisStore, pipe: DeferredPipeline | None = None) -> None:
        self._store = store
        self._pipe = DeferredPipeline(store.client) if pipe is None else pipe
        self._calls: list[tuple[str, list, list]] = []
        self._unread = 0
        self.users_per_call = store.users_per_call  # 1 isolates each user's write (a refused call names one user)

    def send(self, calls: Iterable[tuple[str, list, list]]) -> range:
        """Send ``calls``; returns their positions in :meth:`finish`'s result."""
        start = len(self._calls)
        self._calls.extend(calls)
        self._pipe.send([("EVAL", script, len(keys), *keys, *args) for script, keys, args in self._calls[start:]])
        self._unread += len(self._calls) - start
        return range(start, len(self._calls))

    def add_globals(self, tenant: str, partition: int, offset: int, popularity: Iterable[tuple],
                    covisit_runs: Iterable[tuple]) -> int:  # fmt: skip
        """Send a partition's global deltas; returns the position of its result (1 applied, 0 seen before)."""
        return self.send([self._store.globals_call(tenant, partition, offset, popularity, covisit_runs)])[0]

    def add_users(self, writes: Sequence[UserWrite]) -> list[tuple[int, int]]:
        """Encode and send user writes; returns where each one's result will be, for :meth:`user_result`."""
        per_call = self.users_per_call
        chunks = [writes[i : i + per_call] for i in range(0, len(writes), per_call)]
        positions = self.send([self._store._users_call(chunk) for chunk in chunks])
        return [(at, 2 * j) for at, chunk in zip(positions, chunks) for j in range(len(chunk))]

    @staticmethod
    def user_result(replies: Sequence, ref: tuple[int, int]) -> tuple[int, int]:
        """(status, version) of the user write at ``ref`` (see ``APPLY_USERS``)."""
        call, at = ref
        return int(replies[call][at]), int(replies[call][at + 1])

    def finish(self, *, raise_on_error: bool = True) -> list:
        """Every call's result, in order; raises the first error (``raise_on_error``), or leaves each
        failed call's ``redis.ResponseError`` in its place."""
        import redis

        replies = self._pipe.replies(self._unread)
        self._unread = 0
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, redis.exceptions.ResponseError):
                    raise reply
        return replies

    def calls(self, positions: Iterable[int]) -> list[tuple[str, list, list]]:
        """The (script, keys, args) sent at ``positions``."""
        return [self._calls[n] for n in positions]

    def __enter__(self) -> WriteBatch:
        return self

    def __exit__(self, *exc) -> None:
        if self._unread:  # left early: the pipeline's replies are out of step, so nobody may read them
            self._pipe.abandon()
