"""The processing stage: fetched records -> validated events -> folded user state in Redis.

No Kafka here: records are plain values, so the stage is tested and benchmarked
on its own. The Kafka loop (:mod:`stream.consumer`) submits a poll
(:meth:`BatchProcessor.submit`: folded, writes sent) before it settles the previous one
(:meth:`BatchProcessor.settle`: Redis acknowledged), and commits offsets only after that.

Exactly-once effect (DESIGN.md §4), per batch:

1. bad records become :class:`DeadLetter` values (never exceptions), good ones
   next to them are processed;
2. first-seen items are embedded (cache hits need no encoder) and stored;
3. users and the per-(tenant, partition) global offsets are read in one round trip;
4. each user's events at or below the user's applied offset, or with an
   ``event_id`` seen before, are skipped; the rest is folded in event time;
5. per partition, its global deltas (popularity, co-visitation) of events above the
   global offset are sent first, in calls over contiguous offset ranges (each short,
   so Redis stays responsive to readers), each applied atomically with the last
   offset it covers as the new global offset;
6. after them, the partition's users, each with the atomic script (version check +
   offset check). Writes are sent without waiting and acknowledged together at the
   end of the batch, so Redis works on one partition while the next one folds; one
   connection keeps them in order. A user changed concurrently (a zombie consumer)
   is re-read and folded again.

Batches submitted before earlier ones settled share that connection; they fold users
on the states the earlier batches sent, expecting those writes' version tokens (random,
so a write by anybody else breaks the chain, and the chained write conflicts too), and
count the global offsets already sent as applied.

A crash between any two steps leaves Redis such that replaying the batch gives
the same final state as if nothing had happened.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from features.core.memory import MemorySet, clean_text
from features.core.events import Event, ItemRecord, Rejection, event_limits, parse_event, parse_item
from features.core.state import ItemInfo, UserState, fold_users
from features.redis.deferred import DeferredPipeline, is_cluster_client
from features.redis.store import ALREADY_APPLIED, APPLIED, CONFLICT, RedisStore, UserWrite, WriteBatch, new_version_tokens
from p13n.clock import now_ms
from p13n.config import Config
from p13n.errors import ServiceError
from features.core.cache import TtlCache
from stream.catalog import Catalog, ChunkedEncoder
from stream.records import BatchOutcome, DeadLetter, Record, decode_error, global_chunks, records_from_lines
from stream.rejections import GlobalCall, repair_global_call, user_rejected
from stream.records import by_offset as _by_offset

__all__ = ["Record", "DeadLetter", "BatchOutcome", "BatchProcessor", "Submitted", "records_from_lines"]

MAX_CONFLICT_RETRIES = 5


class _WriteStats(NamedTuple):
    """What a user's write will count once Redis acknowledged it."""

    applied: int
    duplicates: int
    freshness_s: list[float]


@dataclass
class _Writes:
    """A pass's script calls on their way, and the user writes among them."""

    batch: WriteBatch
    sent: list[tuple[tuple, UserWrite, _WriteStats, tuple[int, int]]]
    globals: list[GlobalCall] = field(default_factory=list)
    replies: list = field(default_factory=list)


@dataclass
class Submitted:
    """A batch whose writes are on their way (:meth:`BatchProcessor.submit`)."""

    outcome: BatchOutcome
    groups: dict
    items: dict
    text_vectors: dict
    now_ms: int
    records: Sequence[Record] = ()
    writes: _Writes | None = None
    conflicted: dict = field(default_factory=dict)
    refused: dict = field(default_factory=dict)  # users whose write Redis refused once: key -> message

    def record_at(self, partition: int, offset: int) -> Record:
        """The record at ``partition``/``offset`` of this batch."""
        return next(r for r in self.records if r.partition == partition and r.offset == offset)


class _Stopwatch:
    def __init__(self, outcome: BatchOutcome, stage: str) -> None:
        self.outcome, self.stage = outcome, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.outcome.stage_s[self.stage] += time.perf_counter() - self.start


class BatchProcessor:
    """Applies batches of records to a :class:`RedisStore`."""

    def __init__(
        self,
        store: RedisStore,
        config: Config,
        encode: Callable[[list[str]], np.ndarray],
        *,
        clock_ms: Callable[[], int] = now_ms,
        parse_event: Callable[..., Event | Rejection] = parse_event,
        parse_item: Callable[[bytes], ItemRecord | Rejection] = parse_item,
    ) -> None:
        """``encode`` is wrapped in a :class:`~stream.catalog.ChunkedEncoder` whose chunks take at most a
        fifth of ``kafka.max_poll_interval_ms`` (its ``between_chunks`` is where the consumer keeps its
        group membership alive). ``parse_event`` / ``parse_item`` decode one record (the seam tests use
        to inject a failing decoder): an exception out of them dead-letters that record (``decode_error``)."""
        self.store = store
        self.config = config
        self.encode = encode if isinstance(encode, ChunkedEncoder) else ChunkedEncoder(
            encode, chunk_s=config.kafka.max_poll_interval_ms / 1000 / 5)  # fmt: skip
        self.clock_ms = clock_ms
        self.parse_event = parse_event
        self.items: TtlCache[str, ItemInfo] = TtlCache(config.consumer.item_cache_size, config.consumer.item_cache_ttl_s)
        self.catalog = Catalog(store, self.encode, self.items, parse_item)
        # States this process wrote last, keyed (tenant, user_id), with their version: a hit skips the read and the decode. A stale
        # entry (another process wrote the user since) fails the version check and is re-read. Entries are
        # taken out while a batch folds them and put back only once Redis applied the write, so a failed
        # batch can never leave a half-folded state behind.
        self.users: TtlCache[tuple[str, str], tuple[int, UserState]] = TtlCache(config.consumer.user_cache_size, float("inf"))
        # Submitted, unsettled batches: their connection, the (version once applied, state) of the users they
        # wrote, and the last partition offset whose global deltas they sent.
        self._lane: DeferredPipeline | None = None
        self._in_flight: dict[tuple[str, str], tuple[int, UserState]] = {}
        self._sent_floors: dict[tuple[str, int], int] = {}

    # --- events ------------------------------------------------------------------------------
    def process_events(self, records: Sequence[Record]) -> BatchOutcome:
        """Apply ``records``; returns once Redis acknowledged every write (:meth:`submit` then :meth:`settle`)."""
        return self.settle(self.submit(records))

    def submit(self, records: Sequence[Record]) -> Submitted:
        """Decode, fold and send ``records``' writes without waiting for Redis (:meth:`settle` does).

        Submitted batches share one connection, so Redis applies them in the order they were
        submitted; a batch folds its users on the states the batches before it sent (expecting
        their version tokens), so the next poll folds while Redis still applies this one. Settle
        batches in the order they were submitted; after an error, :meth:`abandon` them all."""
        outcome = BatchOutcome()
        now_ms = self.clock_ms()
        groups: dict[tuple[str, str, int], list[tuple[int, Event]]] = defaultdict(list)
        with _Stopwatch(outcome, "decode"):
            for record in records:
                try:
                    parsed = self.parse_event(record.value or b"", now_ms=now_ms, key=record.key,
                                              **event_limits(self.config.state))  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - the safety net: no record's decoding may stop the loop
                    parsed = decode_error(exc)
                if isinstance(parsed, Rejection):
                    outcome.dead_letters.append(DeadLetter(record, parsed.reason, parsed.detail))
                else:
                    groups[(parsed.tenant, parsed.user_id, record.partition)].append((record.offset, parsed))
        ticket = Submitted(outcome, dict(groups), {}, {}, now_ms, records)
        if not groups:
            return ticket
        events = [e for group in groups.values() for _, e in group]
        with _Stopwatch(outcome, "items"):
            ticket.items = self.catalog.resolve(events, outcome)
        with _Stopwatch(outcome, "encode_text"):
            phrases = {e.text for e in events if e.text and e.type in ("message", "preference")}
            if self.config.memory.enabled:  # memories embed their cleaned text (usually the same)
                cap = self.store.memory_spec.max_chars
                phrases |= {clean_text(e.text, cap) for e in events if e.text and e.type == "message"}
            phrases = sorted(phrases - {""})
            ticket.text_vectors = dict(zip(phrases, self.encode(phrases))) if phrases else {}
        if self._lane is None:
            self._lane = DeferredPipeline(self.store.client)
        try:
            ticket.writes = self._send(ticket.groups, ticket.items, ticket.text_vectors, outcome, now_ms,
                                       self.store.begin_writes(self._lane))  # fmt: skip
        except BaseException:  # part of it may be on the shared connection: nothing after it can be trusted
            self.abandon()
            raise
        if is_cluster_client(self.store.client):  # a cluster pipeline answers only all at once: no overlap there
            self._settle_writes(ticket)
        return ticket

    def settle(self, ticket: Submitted) -> BatchOutcome:
        """Wait for ``ticket``'s writes (and those submitted before it); re-fold users that changed under it."""
        if ticket.writes is not None:
            self._settle_writes(ticket)
        outcome = ticket.outcome
        pending = ticket.conflicted
        for _attempt in range(MAX_CONFLICT_RETRIES):
            if not pending:
                return outcome
            for tenant, user_id, _ in pending:  # re-read from Redis: a later batch's chained state is as stale
                self._in_flight.pop((tenant, user_id), None)
                self.users.discard((tenant, user_id))
            with self.store.begin_writes() as batch:
                if ticket.refused:  # one user per call: a refusal names its user
                    batch.users_per_call = 1
                writes = self._send(pending, ticket.items, ticket.text_vectors, outcome, ticket.now_ms, batch)
                pending = self._acknowledged(writes, ticket)
        raise ServiceError(f"{len(pending)} users kept changing under this consumer; is another consumer writing them?")

    def abandon(self) -> None:
        """Forget every submitted, unsettled batch (after an error: what Redis did with them is unknown).
        States they folded are dropped; their records must be submitted again."""
        if self._lane is not None:
            self._lane.abandon()
        self._lane = None
        self._in_flight.clear()
        self._sent_floors.clear()
        self.users.clear()  # states folded by those batches may sit here too (users they left untouched)

    def _settle_writes(self, ticket: Submitted) -> None:
        writes, ticket.writes = ticket.writes, None
        ticket.conflicted = self._acknowledged(writes, ticket)

    def _acknowledged(self, writes: _Writes, ticket: Submitted) -> dict:
        """Wait for ``writes``' replies and count them; returns the groups to fold again: their write
        conflicted, or Redis refused it for the first time (:mod:`stream.rejections`). Refused global
        calls are repaired here; what Redis refuses again is dead-lettered."""
        import redis

        outcome = ticket.outcome
        with _Stopwatch(outcome, "redis_wait"):
            writes.replies = writes.batch.finish(raise_on_error=False)
        for call in writes.globals:
            error = writes.replies[call[0]]
            if isinstance(error, redis.ResponseError):
                outcome.dead_letters.extend(repair_global_call(self.store, call, error, ticket.record_at))
        conflicted, refused = self._results(writes, outcome)
        outcome.conflicts += len(conflicted)
        again = {}
        for key, message in refused.items():
            if key in ticket.refused:  # refused twice: the user's records of this batch are at fault
                outcome.dead_letters.extend(user_rejected(ticket.record_at(key[2], offset), message)
                                            for offset, _ in ticket.groups[key])  # fmt: skip
            else:
                ticket.refused[key] = message
                again[key] = ticket.groups[key]
        return {**{key: ticket.groups[key] for key in conflicted}, **again}

    def _send(self, groups, items, text_vectors, outcome: BatchOutcome, now_ms: int, batch: WriteBatch) -> _Writes:
        """Read, fold and send ``groups`` on ``batch`` (whose connection earlier batches may share).

        Partition by partition: fold its users, send its global deltas, then the previous
        partition's user writes — without waiting, so Redis executes one partition's (heavy)
        global script while the next one folds and the previous one's user states are encoded.
        A partition's global deltas always go before its users (the exactly-once protocol needs
        that order, and one connection keeps it)."""
        keys = list(groups)
        with _Stopwatch(outcome, "redis_read"):
            users = self._read_users(keys)
            self._load_memories(keys, users, groups)
            floors = self.store.read_global_offsets(sorted({(t, p) for t, _, p in keys}))
        for pair, sent in self._sent_floors.items():  # deltas already on their way count as applied
            if pair in floors and sent > floors[pair]:
                floors[pair] = sent
        members: dict[tuple[str, int], list[int]] = defaultdict(list)
        for n, (tenant, _, partition) in enumerate(keys):
            members[(tenant, partition)].append(n)
        sent: list[tuple[tuple, UserWrite, _WriteStats, tuple[int, int]]] = []
        calls: list[GlobalCall] = []

        def send_users(writes: list[tuple[tuple, UserWrite, _WriteStats]]) -> None:
            with _Stopwatch(outcome, "redis_send"):
                positions = batch.add_users([w for _, w, _ in writes])
            for (key, write, stats), at in zip(writes, positions):
                sent.append((key, write, stats, at))
                self._in_flight[key[:2]] = (write.new_version, write.state)

        held: list[tuple[tuple, UserWrite, _WriteStats]] = []
        for (tenant, partition), indexes in members.items():
            floor = floors[(tenant, partition)]
            with _Stopwatch(outcome, "fold"):
                writes, deltas = self._fold_partition([keys[n] for n in indexes], [users[n] for n in indexes], groups,
                                                      items.get(tenant, {}), text_vectors, now_ms, floor, outcome)  # fmt: skip
            with _Stopwatch(outcome, "redis_send"):
                for last_offset, pops, runs, events in global_chunks(deltas, self.config.consumer.global_deltas_per_call):
                    at = batch.add_globals(tenant, partition, last_offset, pops, runs)
                    calls.append((at, tenant, partition, events))
                    if last_offset > self._sent_floors.get((tenant, partition), -1):
                        self._sent_floors[(tenant, partition)] = last_offset
            send_users(held)  # the previous partition's: Redis runs these globals meanwhile
            held = writes
        send_users(held)
        return _Writes(batch, sent, calls)

    def _results(self, writes: _Writes, outcome: BatchOutcome) -> tuple[list, dict]:
        """Count acknowledged writes and keep their states; returns the keys whose write conflicted, and
        those whose write Redis refused (key -> message)."""
        conflicted: list = []
        refused: dict = {}
        for key, write, stats, at in writes.sent:
            reply = writes.replies[at[0]]
            status = CONFLICT if isinstance(reply, Exception) else WriteBatch.user_result(writes.replies, at)[0]
            if isinstance(reply, Exception):
                refused[key] = str(reply)
            key2 = key[:2]
            mine = self._in_flight.get(key2)
            if mine is not None and mine[0] == write.new_version:  # no later batch took this state over
                del self._in_flight[key2]
                if status == APPLIED:
                    self.users.put(key2, (write.new_version, write.state))
            if key in refused:
                continue  # not written: counted when the retry succeeds
            if status == CONFLICT:
                conflicted.append(key)  # not written: counted when the retry succeeds
            elif status == ALREADY_APPLIED:
                outcome.duplicates += stats.applied + stats.duplicates
            else:
                outcome.applied += stats.applied
                outcome.duplicates += stats.duplicates
                outcome.freshness_s.extend(stats.freshness_s)
        return conflicted, refused

    def _read_users(self, keys: Sequence[tuple[str, str, int]]) -> list[tuple[int, UserState | None]]:
        """(version, state) per key: as an unsettled batch sent it, or from this process's cache (both taken
        out while folded), else from Redis."""
        users: list[tuple[int, UserState | None]] = [(0, None)] * len(keys)
        misses = []
        for n, key in enumerate(keys):
            cached = self._in_flight.pop(key[:2], None) or self.users.pop(key[:2])
            if cached is not None:
                users[n] = cached
            else:
                misses.append(n)
        if misses:
            for n, got in zip(misses, self.store.read_users([(keys[n][0], keys[n][1]) for n in misses])):
                users[n] = got
        return users

    def _load_memories(self, keys: Sequence[tuple], users: list[tuple[int, UserState | None]], groups) -> None:
        """Read the stored memories of the users with new messages whose state does not hold them yet."""
        if not self.config.memory.enabled:
            return
        need = [n for n, key in enumerate(keys) if users[n][1] is not None and users[n][1].memories is None
                and any(e.type == "message" for _, e in groups[key])]  # fmt: skip
        if need:
            for n, memories in zip(need, self.store.read_memories([keys[n][:2] for n in need])):
                users[n][1].memories = memories

    def _fold_partition(self, keys: list[tuple], reads: list[tuple[int, UserState | None]], groups, items,
                        text_vectors, now_ms: int, floor: int,
                        outcome: BatchOutcome) -> tuple[list[tuple[tuple, UserWrite, _WriteStats]], list[tuple[int, list, list]]]:  # fmt: skip
        """Fold each user's events above its applied offset (all users' vectors together). The users are
        of one tenant and ``items`` are that tenant's (items are per tenant: ``sku-1`` of one is not another's).

        Returns the writes and, per event above the partition's global ``floor`` that has any,
        its offset and its global deltas (popularity, co-visit runs)."""
        jobs: list[tuple[tuple, int, UserState, list[tuple[int, Event]], int]] = []
        spec = self.store.spec
        for key, (version, state) in zip(keys, reads):
            state = state or UserState.new(spec)
            batch = groups[key]
            applied_offset = state.offsets.get(key[2], -1)
            if len(batch) == 1:  # the usual case
                fresh = batch if batch[0][0] > applied_offset else []
            else:
                fresh = sorted([pair for pair in batch if pair[0] > applied_offset], key=_by_offset)
            if not fresh:
                outcome.duplicates += len(batch)
                self.users.put(key[:2], (version, state))  # untouched: still valid
                continue
            jobs.append((key, version, state, fresh, len(batch)))
        results = fold_users([(state, [e for _, e in fresh]) for _, _, state, fresh, _ in jobs], items, text_vectors)
        if self.config.memory.enabled:
            for _, _, state, fresh, _ in jobs:
                messages = [e for _, e in fresh if e.type == "message"]
                if messages:
                    if state.memories is None:  # a new user: nothing stored
                        state.memories = MemorySet(self.store.memory_spec, spec.dim)
                    state.memories.fold(messages, text_vectors)
        writes: list[tuple[tuple, UserWrite, _WriteStats]] = []
        deltas: list[tuple[int, list, list]] = []
        for (key, version, state, fresh, received), result, token in zip(jobs, results, new_version_tokens(len(jobs))):
            tenant, user_id, partition = key
            max_offset = fresh[-1][0]
            state.mark_offset(partition, max_offset)
            stats = _WriteStats(result.applied, received - len(fresh) + result.duplicates,
                                [(now_ms - e.ts_ms) / 1000.0 for _, e in fresh])  # fmt: skip
            writes.append((key, UserWrite(tenant, user_id, version, state, partition, max_offset, token), stats))
            if not (result.popularity or result.covisit_runs):
                continue
            if len(fresh) == 1:  # the usual case
                if max_offset > floor:
                    deltas.append((max_offset, result.popularity, result.covisit_runs))
                continue
            offset_of: dict[str, int] = {}
            for offset, e in fresh:
                offset_of.setdefault(e.event_id, offset)  # the first of producer duplicates is the one applied
            by_offset: dict[int, tuple[list, list]] = {}
            for n, part in enumerate((result.popularity, result.covisit_runs)):
                for d in part:
                    offset = offset_of[d.event_id]
                    if offset > floor:
                        slot = by_offset.get(offset)  # not setdefault: that builds two lists per delta
                        if slot is None:
                            slot = by_offset[offset] = ([], [])
                        slot[n].append(d)
            deltas.extend((offset, pops, runs) for offset, (pops, runs) in by_offset.items())
        return writes, deltas

    # --- items -------------------------------------------------------------------------------
    def process_items(self, records: Sequence[Record]) -> BatchOutcome:
        """Catalog records: store text, attributes and a vector; ``deleted`` removes the item
        (:meth:`stream.catalog.Catalog.apply`)."""
        return self.catalog.apply(records)
