"""The sync executor of the Redis layer: :class:`RedisStore` sends the commands of the sans-I/O modules on a
redis-py client and parses their replies with them; :class:`WriteBatch` sends script calls on a
:class:`~features.redis.deferred.DeferredPipeline`.

The layer, bottom up: the key layout (:mod:`features.redis.keys`), the Lua scripts
(:mod:`features.redis.scripts`), commands as values and the one way to queue them
(:mod:`features.redis.commands`), then per concern the commands to send and their replies parsed, no I/O —
a user's hash (:mod:`features.redis.users`), items (:mod:`features.redis.items`), the global signals' reads
(:mod:`features.redis.global_signals`) and the request path's one read (:mod:`features.redis.request`).
The Serve app's asyncio executor runs the same functions (through :meth:`RedisStore.queue_request` and
:meth:`RedisStore.parse_request`) on a ``redis.asyncio`` pipeline; both clients come from one factory,
:func:`p13n.connections.redis_client`, which honours ``redis.cluster``.

The client (and its connection pool) is passed in — built from configuration by the caller, never at import.
Writes go through the Lua scripts, so a user's batch is applied atomically and exactly once; reads for a
request are pipelined (one round trip for the user's state, the candidates' vectors and their popularity; a
second one for co-visitation, whose anchors are only known once the user's history has been read).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from features.core.memory import MemorySet, MemorySpec
from features.core.state import ItemInfo, StateSpec, UserState
from features.redis import global_signals, request
from features.redis import items as _items
from features.redis import users as _users
from features.redis.commands import queue, run
from features.redis.deferred import DeferredPipeline, is_cluster_client
from features.redis.globals_write import globals_call
from features.redis.keys import KeyLayout
from features.redis.users import APPLIED, CONFLICT, USERS_PER_CALL, UserWrite, new_version_token, new_version_tokens
from p13n.config import Config

# UserWrite, the version tokens and the write statuses are defined in features.redis.users; the writers import
# them from here, beside the store they hand them to.
__all__ = ["RedisStore", "WriteBatch", "UserWrite", "new_version_token", "new_version_tokens", "APPLIED", "CONFLICT"]


class RedisStore:
    """The sync executor of the Redis layer. ``client`` is a redis-py ``Redis`` (or ``RedisCluster``); ``keys``,
    ``spec``, ``dim``, ``vector_dtype`` and ``memory_spec`` are what the sans-I/O functions are given, and what
    the Serve app's asyncio executor reads from a store built on its ``redis.asyncio`` client."""

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
            pipe.send(_users.read_commands(self.keys, users))
            replies = pipe.replies()
        return _users.parse_users(replies, self.spec)

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
        return _users.write_call(self.keys, writes, self.ttl_ms, self.config.memory.vector_type)

    def read_memories(self, users: Sequence[tuple[str, str]]) -> list[MemorySet]:
        """Each (tenant, user_id)'s memories (empty when none are stored), in one round trip."""
        replies = run(self.client, _users.memories_commands(self.keys, users))
        return _users.parse_memories(replies, self.memory_spec, self.dim)

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
        return bool(run(self.client, [_users.delete_command(self.keys, tenant, user_id)])[0])

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
        replies = run(self.client, global_signals.global_offsets_commands(self.keys, pairs))
        return global_signals.parse_global_offsets(replies, pairs)

    def popularity(self, tenant: str, item_ids: Sequence[str], now_ms: int) -> np.ndarray:
        """The items' forward-decayed popularity read at ``now_ms``."""
        replies = run(self.client, global_signals.popularity_commands(self.keys, tenant, item_ids))
        return global_signals.parse_popularity(replies, now_ms, tau_s=self.config.state.popularity_tau_s)

    def covisit_matrix(self, tenant: str, anchors: Sequence[str], candidates: Sequence[str]) -> np.ndarray:
        """Cosine co-visitation ``c(a, x) / sqrt(n(a)·n(x))`` (:func:`~features.core.signals.cosine`), shape
        (len(anchors), len(candidates)) — what the scorer's ``covisit`` feature weighs."""
        if not anchors or not candidates:
            return np.zeros((len(anchors), len(candidates)), dtype=np.float64)
        replies = run(self.client, global_signals.covisit_commands(self.keys, tenant, anchors, candidates))
        return global_signals.parse_covisit(replies, len(anchors), len(candidates))

    def covisit_neighbours(self, tenant: str, item_id: str) -> dict[str, float]:
        """The item's co-visitation row: neighbour -> count (at most ``state.covisit_top_m``)."""
        reply = self.client.execute_command(*global_signals.covisit_row_command(self.keys, tenant, item_id))
        return global_signals.parse_covisit_row(reply)

    def covisit_occurrences(self, tenant: str, item_ids: Sequence[str]) -> np.ndarray:
        """How often each item occurred in co-visitation (its ``n``; 0 when never)."""
        if not item_ids:
            return np.zeros(0, dtype=np.float64)
        reply = self.client.execute_command(*global_signals.occurrences_command(self.keys, tenant, item_ids))
        return global_signals.parse_occurrences(reply)

    # --- items -------------------------------------------------------------------------------
    def put_items(self, tenant: str, items: Mapping[str, ItemInfo]) -> None:
        """Store vectors (where given) and text/attributes of items."""
        run(self.client, _items.put_commands(self.keys, tenant, items, self.vector_dtype))

    def put_item_vectors(self, tenant: str, items: Mapping[str, tuple[str, np.ndarray]]) -> None:
        """Store vectors of first-seen items embedded from event text; catalog text and
        attributes already stored are kept (the text is only set when none is there)."""
        run(self.client, _items.put_vector_commands(self.keys, tenant, items, self.vector_dtype))

    def delete_items(self, tenant: str, item_ids: Iterable[str]) -> None:
        run(self.client, _items.delete_commands(self.keys, tenant, item_ids))

    def get_items(self, tenant: str, item_ids: Sequence[str]) -> dict[str, ItemInfo]:
        """Known items among ``item_ids`` (unknown ones are absent)."""
        return self.parse_items(run(self.client, _items.get_commands(self.keys, tenant, item_ids)), item_ids)

    def queue_items(self, pipe, tenant: str, item_ids: Sequence[str]) -> None:
        """Queue :func:`features.redis.items.get_commands` on ``pipe`` (sync or asyncio) for :meth:`parse_items`."""
        queue(pipe, _items.get_commands(self.keys, tenant, item_ids))

    def parse_items(self, replies: Sequence, item_ids: Sequence[str]) -> dict[str, ItemInfo]:
        return _items.parse_items(replies, item_ids, self.vector_dtype)

    def items_with_vectors(self, tenant: str, item_ids: Sequence[str]) -> set[str]:
        """Which of ``item_ids`` already have a stored vector (so need no encoding)."""
        return _items.parse_has_vector(run(self.client, _items.has_vector_commands(self.keys, tenant, item_ids)),
                                       item_ids)  # fmt: skip

    # --- request path ------------------------------------------------------------------------
    # The asyncio executor of the Serve app queues the same commands (queue_request) on a redis.asyncio
    # pipeline and parses its replies with the same code (parse_request): features.redis.request.
    def queue_request(self, pipe, tenant: str, user_id: str, popular_ids: Sequence[str],
                      item_ids: Sequence[str]) -> None:  # fmt: skip
        """Queue :func:`features.redis.request.request_commands` on ``pipe`` (sync or asyncio)."""
        queue(pipe, request.request_commands(self.keys, tenant, user_id, popular_ids, item_ids))

    def parse_request(
        self, replies: Sequence, popular_ids: Sequence[str], item_ids: Sequence[str], now_ms: int
    ) -> tuple[UserState | None, dict[str, ItemInfo], np.ndarray]:
        return request.parse_request(replies, item_ids, now_ms, spec=self.spec, dtype=self.vector_dtype,
                                     tau_s=self.config.state.popularity_tau_s)  # fmt: skip

    def read_request(
        self, tenant: str, user_id: str, candidate_ids: Sequence[str], now_ms: int
    ) -> tuple[UserState | None, dict[str, ItemInfo], np.ndarray]:
        """The user's state, the candidates' items and their popularity — one round trip."""
        replies = run(self.client, request.request_commands(self.keys, tenant, user_id, candidate_ids, candidate_ids))
        return self.parse_request(replies, candidate_ids, candidate_ids, now_ms)


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

    user_result = staticmethod(_users.write_result)  # (status, version) of the user write at a ref

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
