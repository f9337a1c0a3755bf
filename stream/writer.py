"""The writer: the Redis side of the processing stage — the states a fold plan starts from, and its writes.

Writes of every submitted, unsettled poll share one connection (a
:class:`~features.redis.deferred.DeferredPipeline`), so Redis applies them in the order they were sent:
a partition's global deltas before its users, one poll before the next. A poll folds its users on the
states the polls before it sent (:attr:`Writer.in_flight`: version token and state, taken out while
folded), expecting those writes' version tokens: random, so a write by anybody else breaks the chain,
and every write chained on a failed one conflicts too. The global applied offsets the earlier polls
sent count as applied (:meth:`Writer.global_offsets`).

After Redis acknowledged a user's write, its state is kept in a cache of the states this process wrote
last (a hit skips the read and the decode; a stale entry fails the version check and is re-read).
Entries are taken out while a poll folds them and put back only once Redis applied the write, so a
failed poll never leaves a half-folded state behind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from features.core.cache import TtlCache
from features.redis.deferred import DeferredPipeline
from features.core.state import UserState
from features.redis.store import APPLIED, CONFLICT, RedisStore, UserWrite, WriteBatch
from stream.crash import NEVER, CrashPoints
from stream.intake import AtOffset, UserKey
from stream.plan import GlobalDelta, PlannedWrite, WriteStats
from stream.records import BatchOutcome, Record, Timed, global_chunks
from stream.rejections import GlobalCall, repair_global_call

__all__ = ["Sending", "Writer"]


@dataclass
class Sending:
    """Script calls of one pass on their way: the user writes among them (key, write, what it counts,
    where its reply will be) and the global-deltas calls."""

    batch: WriteBatch
    pipeline: DeferredPipeline
    users: list[tuple[UserKey, UserWrite, WriteStats, tuple[int, int]]] = field(default_factory=list)
    global_calls: list[GlobalCall] = field(default_factory=list)


class Writer:
    """Reads and writes the users and global signals of submitted polls (see the module)."""

    def __init__(self, store: RedisStore, user_cache_size: int, crash: CrashPoints = NEVER) -> None:
        self.store = store
        self.crash = crash
        #: States this process wrote last, keyed (tenant, user_id): (version, state).
        self.users: TtlCache[tuple[str, str], tuple[int, UserState]] = TtlCache(user_cache_size, float("inf"))
        #: States sent by unsettled polls, keyed (tenant, user_id): (version token sent, state).
        self.in_flight: dict[tuple[str, str], tuple[int, UserState]] = {}
        self._pipeline: DeferredPipeline | None = None
        self._sent_global_offsets: dict[tuple[str, int], int] = {}

    # --- reads -----------------------------------------------------------------------------------
    def read(self, keys: Sequence[UserKey]) -> list[tuple[int, UserState | None]]:
        """(version, state) per key: as an unsettled poll sent it, or from the cache (both taken out
        while folded), else from Redis (one round trip for all misses)."""
        reads: list[tuple[int, UserState | None]] = [(0, None)] * len(keys)
        misses = []
        for n, key in enumerate(keys):
            cached = self.in_flight.pop(key[:2], None) or self.users.pop(key[:2])
            if cached is not None:
                reads[n] = cached
            else:
                misses.append(n)
        if misses:
            for n, got in zip(misses, self.store.read_users([(keys[n][0], keys[n][1]) for n in misses])):
                reads[n] = got
        return reads

    def load_memories(self, keys: Sequence[UserKey], reads: list[tuple[int, UserState | None]],
                      groups: Mapping[UserKey, list[AtOffset]]) -> None:  # fmt: skip
        """Read the stored memories of the users with new messages whose state does not hold them yet."""
        need = [n for n, key in enumerate(keys) if reads[n][1] is not None and reads[n][1].memories is None
                and any(e.type == "message" for _, e in groups[key])]  # fmt: skip
        if need:
            for n, memories in zip(need, self.store.read_memories([keys[n][:2] for n in need])):
                reads[n][1].memories = memories

    def global_offsets(self, pairs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The global applied offset per (tenant, partition): Redis's, or what unsettled polls sent."""
        applied = self.store.read_global_offsets(pairs)
        for pair, sent in self._sent_global_offsets.items():
            if pair in applied and sent > applied[pair]:
                applied[pair] = sent
        return applied

    def keep(self, key: UserKey, version: int, state: UserState) -> None:
        """Put back a state read but not written (nothing new for it): still valid."""
        self.users.put(key[:2], (version, state))

    def forget(self, keys: Sequence[UserKey]) -> None:
        """Drop what this process holds of ``keys``' users: they are re-read from Redis."""
        for key in keys:
            self.in_flight.pop(key[:2], None)
            self.users.discard(key[:2])

    # --- writes ----------------------------------------------------------------------------------
    def begin(self, *, shared: bool = True) -> Sending:
        """Calls of a new pass: on the connection unsettled polls share (``shared``), or on their own."""
        if not shared:
            pipeline = DeferredPipeline(self.store.client)
        else:
            if self._pipeline is None:
                self._pipeline = DeferredPipeline(self.store.client)
            pipeline = self._pipeline
        return Sending(self.store.begin_writes(pipeline), pipeline)

    def send_globals(self, sending: Sending, tenant: str, partition: int, deltas: list[GlobalDelta],
                     per_call: int) -> None:  # fmt: skip
        """Send a partition's global deltas in calls of contiguous offsets (each applied atomically with
        its last offset as the partition's new global applied offset)."""
        for last_offset, pops, runs, events in global_chunks(deltas, per_call):
            at = sending.batch.add_globals(tenant, partition, last_offset, pops, runs)
            sending.global_calls.append((at, tenant, partition, events))
            if last_offset > self._sent_global_offsets.get((tenant, partition), -1):
                self._sent_global_offsets[(tenant, partition)] = last_offset
            if self.crash.armed:
                self.crash.reached("after_global_call", sending.pipeline.replies)

    def send_users(self, sending: Sending, planned: list[PlannedWrite]) -> None:
        """Send user writes; their states count as in flight until acknowledged."""
        if not planned:
            return
        writes = [UserWrite(p.key[0], p.key[1], p.expected_version, p.state, p.new_version) for p in planned]
        positions = sending.batch.add_users(writes)
        for p, write, at in zip(planned, writes, positions):
            sending.users.append((p.key, write, p.stats, at))
            self.in_flight[p.key[:2]] = (p.new_version, p.state)
        if self.crash.armed:
            self.crash.reached("after_user_writes", sending.pipeline.replies)

    def acknowledge(self, sending: Sending, outcome: BatchOutcome,
                    record_at: Callable[[int, int], Record]) -> tuple[list[UserKey], dict[UserKey, str]]:  # fmt: skip
        """Wait for ``sending``'s replies and count them into ``outcome``. Refused global calls are
        repaired here (what Redis refuses again is dead-lettered, ``record_at(partition, offset)``
        names the record). Returns the keys whose write conflicted, and those Redis refused (key ->
        message): neither is written yet."""
        import redis

        with Timed(outcome, "redis_wait"):
            replies = sending.batch.finish(raise_on_error=False)
        for call in sending.global_calls:
            if isinstance(replies[call[0]], redis.ResponseError):
                outcome.dead_letters.extend(repair_global_call(self.store, call, replies[call[0]], record_at))
        conflicted: list[UserKey] = []
        refused: dict[UserKey, str] = {}
        for key, write, stats, at in sending.users:
            reply = replies[at[0]]
            status = CONFLICT if isinstance(reply, Exception) else WriteBatch.user_result(replies, at)[0]
            mine = self.in_flight.get(key[:2])
            if mine is not None and mine[0] == write.new_version:  # no later poll took this state over
                del self.in_flight[key[:2]]
                if status == APPLIED:
                    self.users.put(key[:2], (write.new_version, write.state))
            if isinstance(reply, Exception):
                refused[key] = str(reply)  # counted when the retry succeeds
            elif status == CONFLICT:
                conflicted.append(key)  # counted when the retry succeeds
            else:
                outcome.applied += stats.applied
                outcome.duplicates += stats.duplicates
                outcome.freshness_s.extend(stats.freshness_s)
        outcome.conflicts += len(conflicted)
        return conflicted, refused

    def abandon(self) -> None:
        """Forget every unsettled poll (after an error: what Redis did with them is unknown); states
        they folded are dropped (the cache too: they may sit there as well)."""
        if self._pipeline is not None:
            self._pipeline.abandon()
        self._pipeline = None
        self.in_flight.clear()
        self._sent_global_offsets.clear()
        self.users.clear()
