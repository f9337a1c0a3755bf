"""The processing stage: a poll's records → events → folded user state in Redis, exactly once in effect.

No Kafka here: records are plain values, so the stage is tested and benchmarked on its own. Three
steps, one module each:

1. **intake** (:mod:`stream.intake`): records decode into events grouped per user and partition, each
   event with the offset it came with; bad records become dead letters (values, never exceptions);
2. **fold plan** (:mod:`stream.plan`, pure): per partition, each user's events above its applied
   offset are folded in event time into a compare-and-set write, and each event's global deltas
   (popularity, co-visitation) are keyed by its offset;
3. **writer** (:mod:`stream.writer`): reads the states the plan starts from, sends its writes, waits
   for Redis and counts the replies.

How exactly-once works, end to end (DESIGN.md §4). Kafka delivers at least once: after a crash or a
rebalance, the records after the consumer group's last commit come again. Their effect is applied once:

- a user's events live in one partition (the record key is ``tenant/user``), so one consumer owns a
  user at a time;
- the user's state records the last offset applied per partition (``UserState.offsets``); it is
  written with a compare-and-set on the user's version token
  (:data:`~features.redis.scripts.APPLY_USERS`), so a state and the offsets it includes are written
  together or not at all, and only over the very state they were folded from. On re-delivery the
  plan finds those offsets in the state and skips the events at or below them; a write that lost a
  race (a zombie consumer) conflicts, and the user is re-read and folded again;
- per (tenant, partition), Redis keeps the global applied offset; each global-deltas call covers a
  contiguous range of offsets and advances it atomically (:data:`~features.redis.scripts.APPLY_GLOBALS`),
  skipping a range already applied. A partition's global deltas are sent before its users' writes, on
  one connection, so a user's write never lands without the global deltas of the events it applied: a
  replay re-folds the users whose write was lost, and their deltas at or below the global applied offset
  are dropped, not added twice;
- producer duplicates (same ``event_id``, another offset) are caught by a bounded per-user set of
  recent event ids inside the state;
- the consumer loop (:mod:`stream.consumer`) commits a poll's offsets only after Redis acknowledged
  its writes and the DLQ its dead letters.

A crash at any instant therefore leaves Redis such that replaying from the last commit gives the same
state as a run that never died; ``tests/stream`` kills consumers at random instants and at each named
crash point (:mod:`stream.crash`) to check it.

Polls overlap: :meth:`BatchProcessor.submit` folds a poll and sends its writes without waiting,
:meth:`BatchProcessor.settle` waits for them, so Redis applies one poll while the next one folds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from features.core.cache import TtlCache
from features.redis.deferred import is_cluster_client
from features.core.events import Event, ItemRecord, Rejection, event_limits, parse_event, parse_item
from features.core.state import ItemInfo
from features.redis.store import RedisStore, new_version_tokens
from p13n.clock import now_ms
from p13n.config import Config
from p13n.errors import ServiceError
from stream.catalog import Catalog, ChunkedEncoder
from stream.crash import NEVER, CrashPoints
from stream.intake import AtOffset, UserKey, take_in, texts_to_embed
from stream.plan import PlannedWrite, plan_partition
from stream.records import BatchOutcome, DeadLetter, Record, Timed, records_from_lines
from stream.rejections import user_rejected
from stream.writer import Sending, Writer

__all__ = ["Record", "DeadLetter", "BatchOutcome", "BatchProcessor", "Submitted", "records_from_lines"]

MAX_CONFLICT_RETRIES = 5


@dataclass
class Submitted:
    """A poll whose writes are on their way (:meth:`BatchProcessor.submit`)."""

    outcome: BatchOutcome
    groups: dict[UserKey, list[AtOffset]]
    items: dict
    text_vectors: dict
    now_ms: int
    records: Sequence[Record] = ()
    sending: Sending | None = None
    conflicted: dict = field(default_factory=dict)  # users to fold again: key -> events
    refused: dict = field(default_factory=dict)  # users whose write Redis refused once: key -> message

    def record_at(self, partition: int, offset: int) -> Record:
        """The record at ``partition``/``offset`` of this poll."""
        return next(r for r in self.records if r.partition == partition and r.offset == offset)


class BatchProcessor:
    """Applies polls of records to a :class:`RedisStore` (see the module for the protocol)."""

    def __init__(
        self,
        store: RedisStore,
        config: Config,
        encode: Callable[[list[str]], np.ndarray],
        *,
        clock_ms: Callable[[], int] = now_ms,
        parse_event: Callable[..., Event | Rejection] = parse_event,
        parse_item: Callable[[bytes], ItemRecord | Rejection] = parse_item,
        crash: CrashPoints = NEVER,
    ) -> None:
        """``encode`` is wrapped in a :class:`~stream.catalog.ChunkedEncoder` whose chunks take at most a
        fifth of ``kafka.max_poll_interval_ms`` (its ``between_chunks`` is where the consumer keeps its
        group membership alive). ``parse_event`` / ``parse_item`` decode one record (the seam tests use
        to inject a failing decoder): an exception out of them dead-letters that record (``decode_error``).
        ``crash`` arms a crash point (:mod:`stream.crash`; none by default)."""
        self.store = store
        self.config = config
        self.encode = encode if isinstance(encode, ChunkedEncoder) else ChunkedEncoder(
            encode, chunk_s=config.kafka.max_poll_interval_ms / 1000 / 5)  # fmt: skip
        self.clock_ms = clock_ms
        self.parse_event = parse_event
        self.crash = crash
        self.items: TtlCache[str, ItemInfo] = TtlCache(config.consumer.item_cache_size, config.consumer.item_cache_ttl_s)
        self.catalog = Catalog(store, self.encode, self.items, parse_item)
        self.writer = Writer(store, config.consumer.user_cache_size, crash)
        self._limits = event_limits(config.state)
        self._memory = store.memory_spec if config.memory.enabled else None

    # --- events ------------------------------------------------------------------------------
    def process_events(self, records: Sequence[Record]) -> BatchOutcome:
        """Apply ``records``; returns once Redis acknowledged every write (:meth:`submit` then :meth:`settle`)."""
        return self.settle(self.submit(records))

    def submit(self, records: Sequence[Record]) -> Submitted:
        """Decode, fold and send ``records``' writes without waiting for Redis (:meth:`settle` does).

        Submitted polls share one connection, so Redis applies them in the order they were
        submitted; a poll folds its users on the states the polls before it sent (expecting
        their version tokens), so the next poll folds while Redis still applies this one. Settle
        polls in the order they were submitted; after an error, :meth:`abandon` them all."""
        outcome = BatchOutcome()
        now = self.clock_ms()
        with Timed(outcome, "decode"):
            intake = take_in(records, now_ms=now, parse=self.parse_event, limits=self._limits)
        outcome.dead_letters.extend(intake.dead_letters)
        submitted = Submitted(outcome, intake.groups, {}, {}, now, records)
        if not intake.groups:
            return submitted
        events = intake.events()
        with Timed(outcome, "items"):
            submitted.items = self.catalog.resolve(events, outcome)
        with Timed(outcome, "encode_text"):
            texts = texts_to_embed(events, self._memory.max_chars if self._memory else None)
            submitted.text_vectors = dict(zip(texts, self.encode(texts))) if texts else {}
        try:
            submitted.sending = self._send(submitted.groups, submitted, self.writer.begin())
        except BaseException:  # part of it may be on the shared connection: nothing after it can be trusted
            self.abandon()
            raise
        if is_cluster_client(self.store.client):  # a cluster pipeline answers only all at once: no overlap there
            self._acknowledge(submitted)
        return submitted

    def settle(self, submitted: Submitted) -> BatchOutcome:
        """Wait for ``submitted``'s writes (and those submitted before it); re-fold users that changed under it."""
        if submitted.sending is not None:
            self._acknowledge(submitted)
        pending = submitted.conflicted
        for _attempt in range(MAX_CONFLICT_RETRIES):
            if not pending:
                return submitted.outcome
            self.writer.forget(list(pending))  # re-read from Redis: a later poll's chained state is as stale
            sending = self.writer.begin(shared=False)
            with sending.batch:
                if submitted.refused:  # one user per call: a refusal names its user
                    sending.batch.users_per_call = 1
                pending = self._acknowledged(self._send(pending, submitted, sending), submitted)
        raise ServiceError(f"{len(pending)} users kept changing under this consumer; is another consumer writing them?")

    def abandon(self) -> None:
        """Forget every submitted, unsettled poll (after an error: what Redis did with them is unknown).
        States they folded are dropped; their records must be submitted again."""
        self.writer.abandon()

    def _acknowledge(self, submitted: Submitted) -> None:
        sending, submitted.sending = submitted.sending, None
        submitted.conflicted = self._acknowledged(sending, submitted)

    def _acknowledged(self, sending: Sending, submitted: Submitted) -> dict[UserKey, list[AtOffset]]:
        """Wait for ``sending``'s replies and count them; returns the groups to fold again: their write
        conflicted, or Redis refused it for the first time (:mod:`stream.rejections`). A user whose
        write Redis refuses twice has its records of this poll dead-lettered."""
        outcome = submitted.outcome
        conflicted, refused = self.writer.acknowledge(sending, outcome, submitted.record_at)
        again = {key: submitted.groups[key] for key in conflicted}
        for key, message in refused.items():
            if key in submitted.refused:  # refused twice: the user's records of this poll are at fault
                outcome.dead_letters.extend(user_rejected(submitted.record_at(key[2], offset), message)
                                            for offset, _ in submitted.groups[key])  # fmt: skip
            else:
                submitted.refused[key] = message
                again[key] = submitted.groups[key]
        return again

    def _send(self, groups: dict[UserKey, list[AtOffset]], submitted: Submitted, sending: Sending) -> Sending:
        """Read, plan and send ``groups`` on ``sending`` (whose connection earlier polls may share).

        Partition by partition: plan it, send its global deltas, then the previous partition's user
        writes — without waiting, so Redis executes one partition's (heavy) global script while the
        next one folds and the previous one's user states are encoded. A partition's global deltas
        always go before its users (the protocol needs that order, and one connection keeps it)."""
        outcome, writer = submitted.outcome, self.writer
        keys = list(groups)
        with Timed(outcome, "redis_read"):
            reads = writer.read(keys)
            if self._memory is not None:
                writer.load_memories(keys, reads, groups)
            global_offsets = writer.global_offsets(sorted({(t, p) for t, _, p in keys}))
        partitions: dict[tuple[str, int], list[int]] = defaultdict(list)
        for n, (tenant, _, partition) in enumerate(keys):
            partitions[(tenant, partition)].append(n)
        per_call = self.config.consumer.global_deltas_per_call
        previous: list[PlannedWrite] = []
        for (tenant, partition), indexes in partitions.items():
            with Timed(outcome, "fold"):
                plan = plan_partition([keys[n] for n in indexes], [reads[n] for n in indexes], groups,
                                      submitted.items.get(tenant, {}), submitted.text_vectors, spec=self.store.spec,
                                      now_ms=submitted.now_ms, global_offset=global_offsets[(tenant, partition)],
                                      tokens=new_version_tokens, memory_spec=self._memory)  # fmt: skip
            outcome.duplicates += plan.duplicates
            for key, version, state in plan.untouched:
                writer.keep(key, version, state)
            if self.crash.armed:
                self.crash.reached("after_fold")
            with Timed(outcome, "redis_send"):
                writer.send_globals(sending, tenant, partition, plan.deltas, per_call)
                writer.send_users(sending, previous)  # the previous partition's: Redis runs these globals meanwhile
            previous = plan.writes
        with Timed(outcome, "redis_send"):
            writer.send_users(sending, previous)
        return sending

    # --- items -------------------------------------------------------------------------------
    def process_items(self, records: Sequence[Record]) -> BatchOutcome:
        """Catalog records: store text, attributes and a vector; ``deleted`` removes the item
        (:meth:`stream.catalog.Catalog.apply`)."""
        return self.catalog.apply(records)
