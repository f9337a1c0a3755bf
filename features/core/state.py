"""A user's time-aware state, folded from events in event time (DESIGN.md §3).

Contract in the style of river: :meth:`UserState.fold` takes a user's batch of
events (any order) and updates in place; read-outs take ``now``. All signals are
decayed sums, and co-visitation neighbours are defined in event-time order, so
the state does not depend on arrival order (except where a bound has dropped the
weakest or oldest entries).

>>> import numpy as np
>>> from features.core.events import Event
>>> spec = StateSpec.from_config(StateConfig(), dim=2)
>>> user = UserState.new(spec)
>>> items = {"i1": ItemInfo(vector=np.array([1.0, 0.0], np.float32), attributes={"category": "jazz"})}
>>> ev = Event(event_id="e1", user_id="u", type="purchase", ts_ms=3_600_000, item_id="i1")
>>> result = user.fold([ev, ev], items)          # the duplicate is skipped by event_id
>>> result.applied, result.duplicates, user.history[0].item_id
(1, 1, 'i1')
>>> round(user.attribute_preferences(now_ms=3_600_000)["category=jazz"], 3)
8.0
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from features.core.decay import DecayedSum, DecayedSumUpdates, SparseDecayedSum
from features.core.events import Event
from features.core.history import (
    NEGATIVE_TYPES,
    CovisitDelta,
    CovisitRun,
    HistoryEntry,
    PopularityDelta,
    add_history,
    collect_covisits,
    new_tuple,
)
from features.core.preferences import Preference, add_preference, standing_preferences
from features.core.scorer import UserView
from p13n.config import StateConfig
from p13n.vocabulary import TEXT_EVENT_TYPES

__all__ = ["StateSpec", "ItemInfo", "FoldResult", "UserState", "fold_users", "event_id_hash", "HOUR_KEYS", "ACTIVITY_MAX_KEYS"]

TEXT_TYPES = TEXT_EVENT_TYPES


@dataclass(frozen=True)
class StateSpec:
    """Everything the fold needs from configuration, resolved once."""

    horizon_names: tuple[str, ...]
    taus: np.ndarray  # seconds, one per horizon
    long_tau: float
    #: The longest horizon alone, for the single-horizon signals. One array shared by every state of
    #: this spec, so their updates batch together (:class:`~features.core.decay.DecayedSumUpdates`).
    long_taus: np.ndarray
    dim: int
    weights: Mapping[str, float]
    signed_weights: Mapping[str, float]  # per type but rating: negative for dislike/skip
    rating_midpoint: float
    rating_scale: float
    history_size: int
    recent_event_ids: int
    max_preferences: int
    max_attribute_values: int
    covisit_window: int

    @classmethod
    def from_config(cls, config: StateConfig, dim: int) -> StateSpec:
        names = tuple(config.horizons)
        taus = np.array([config.horizons[n] for n in names], dtype=np.float64)
        DecayedSum(taus, dim)  # validates taus and dim once
        weights = dict(config.event_weights)
        return cls(
            horizon_names=names,
            taus=taus,
            long_tau=float(taus.max()),
            long_taus=taus[[int(taus.argmax())]],
            dim=dim,
            weights=weights,
            signed_weights={t: -w if t in NEGATIVE_TYPES else w for t, w in weights.items()},
            rating_midpoint=config.rating_midpoint,
            rating_scale=config.rating_scale,
            history_size=config.history_size,
            recent_event_ids=config.recent_event_ids,
            max_preferences=config.max_preferences,
            max_attribute_values=config.max_attribute_values,
            covisit_window=config.covisit_window,
        )

    def signed_weight(self, event: Event) -> float:
        """Weight of an event: positive for positive signals, negative for dislike/skip/low ratings.

        >>> spec = StateSpec.from_config(StateConfig(), dim=1)
        >>> ev = Event(event_id="e", user_id="u", type="rating", ts_ms=0, item_id="i", value=1.0)
        >>> spec.signed_weight(ev)    # (1 - 3) / 2 * weight(rating)=4
        -4.0
        """
        if event.type == "rating":
            value = event.value if event.value is not None else self.rating_midpoint
            return self.weights.get("rating", 0.0) * (value - self.rating_midpoint) / self.rating_scale
        return self.signed_weights.get(event.type, 0.0)


@dataclass(frozen=True)
class ItemInfo:
    """What the fold and the scorer know of an item."""

    vector: np.ndarray | None = None
    attributes: Mapping[str, object] = field(default_factory=dict)
    text: str | None = None

    @functools.cached_property
    def attribute_keys(self) -> tuple[str, ...]:
        """``name=value`` keys of the categorical attributes (numbers are not preferences), computed once."""
        keys: list[str] = []
        for name, value in self.attributes.items():
            if isinstance(value, str):
                keys.append(f"{name}={value}")
            elif isinstance(value, list):
                keys.extend(f"{name}={v}" for v in value if isinstance(v, str))
        return tuple(keys)


@dataclass
class FoldResult:
    """What folding a batch did, and the global-signal deltas it produced."""

    applied: int = 0
    duplicates: int = 0
    popularity: list[PopularityDelta] = field(default_factory=list)
    covisit_runs: list[CovisitRun] = field(default_factory=list)

    @property
    def covisits(self) -> list[CovisitDelta]:
        """The co-visitation deltas pair by pair, in the order they arose."""
        return [new_tuple(CovisitDelta, (e, run.later, run.delta, run.source)) for run in self.covisit_runs for e in run.earlier]


_event_order = operator.attrgetter("ts_ms", "event_id")


def _tagged_event_order(pair: tuple[str | int, Event]) -> tuple[int, str]:
    return _event_order(pair[1])
#: Keys of the activity counts per UTC hour of day (the interest clock), beside the event types' own.
HOUR_KEYS = tuple(f"hour={hour:02d}" for hour in range(24))
#: Every event type and hour of day fit, so the activity counts never drop a key.
ACTIVITY_MAX_KEYS = 64


def event_id_hash(event_id: str) -> bytes:
    """8-byte hash of an event id (the dedup list stores these; 64 bits make a false duplicate
    among a user's remembered ids a ~1e-17 chance).

    >>> event_id_hash("e1") == event_id_hash("e1") != event_id_hash("e2")
    True
    """
    return hashlib.blake2b(event_id.encode(), digest_size=8).digest()


def _holds_id(ids: bytearray, h: bytes) -> bool:
    """Whether the 8-byte hash ``h`` is one of ``ids`` (8-byte hashes back to back).

    >>> _holds_id(bytearray(b"aaaaaaaabbbbbbbb"), b"bbbbbbbb"), _holds_id(bytearray(b"xaaaaaaaay0000000"[:16]), b"aaaaaaay")
    (True, False)
    """
    at = ids.find(h)
    while at % 8:  # a match across two hashes; -1 (absent) is odd too, hence the check below
        if at < 0:
            return False
        at = ids.find(h, at + 1)
    return True


class UserState:
    """Per-user signals: embeddings per horizon, negatives, text topics, attribute EMA,
    preferences, history, activity per event type and hour of day (the interest clock), idempotency marks."""

    def __init__(self, spec: StateSpec) -> None:
        self.spec = spec
        self.positive = DecayedSum.zeros(spec.taus, spec.dim)
        self.negative = DecayedSum.zeros(spec.long_taus, spec.dim)
        self.text = DecayedSum.zeros(spec.long_taus, spec.dim)
        self.attributes = SparseDecayedSum(spec.long_tau, spec.max_attribute_values)
        #: Decayed counts of events per type (``click``) and per UTC hour of day (``hour=09``, the
        #: interest clock): one scalar sum, each event adds 1 to its type and its hour.
        self.activity = SparseDecayedSum(spec.long_tau, ACTIVITY_MAX_KEYS)
        #: Preference statements seen, oldest first: the newest ``max_preferences`` (features.core.preferences);
        #: what is shown of them is :attr:`preferences`.
        self.statements: list[Preference] = []
        self.history: list[HistoryEntry] = []
        #: 8-byte hashes of the latest event ids, oldest first, back to back: one object to search,
        #: store and load, where a list of hashes would be ~100 small objects scattered in memory.
        self.recent_ids = bytearray()
        self.offsets: dict[int, int] = {}
        self.events_applied = 0
        #: The user's conversational memories (:class:`~features.core.memory.MemorySet`), stored beside the state
        #: (field ``m`` of the user's hash) and written with it; None until loaded (only users with new
        #: messages need them).
        self.memories = None

    @classmethod
    def new(cls, spec: StateSpec) -> UserState:
        return cls(spec)

    # --- fold ------------------------------------------------------------------------------
    def fold(
        self,
        events: Sequence[Event],
        items: Mapping[str, ItemInfo],
        text_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> FoldResult:
        """Fold a batch of this user's events (any order). Events whose ``event_id`` was
        already applied are skipped. ``text_vectors`` maps message/preference text to its embedding."""
        return fold_users([(self, events)], items, text_vectors)[0]

    def _fold_into(self, events: Sequence[Event], items: Mapping[str, ItemInfo],
                   text_vectors: Mapping[str, np.ndarray], vectors: DecayedSumUpdates,
                   tags: Sequence[int] | None = None) -> FoldResult:  # fmt: skip
        """Everything of :meth:`fold` but the vector sums, which are queued on ``vectors``.

        One pass over the events in event-time order; each event's item and signed weight
        are looked up once for every signal they feed. Deltas carry their event's tag (``tags``,
        parallel to ``events``), or its id when there are none."""
        result = FoldResult()
        fresh = self._unseen(events, result, tags)
        if not fresh:
            return result
        if len(fresh) > 1:
            fresh.sort(key=_tagged_event_order)
        spec = self.spec
        signed_weights = spec.signed_weights
        covisit_window, history_size = spec.covisit_window, spec.history_size
        positive: list[tuple[float, float, np.ndarray]] = []
        negative: list[tuple[float, float, np.ndarray]] = []
        text: list[tuple[float, float, np.ndarray]] = []
        counts: list[tuple[float, tuple[str, str], float]] = []
        attributes: list[tuple[float, tuple[str, ...], float]] = []
        popularity, covisits = result.popularity, result.covisit_runs
        for source, event in fresh:
            ts_ms, kind, item_id = event.ts_ms, event.type, event.item_id
            t = ts_ms / 1000.0
            w = signed_weights.get(kind, 0.0) if kind != "rating" else spec.signed_weight(event)
            counts.append((t, (kind, HOUR_KEYS[(ts_ms // 3_600_000) % 24]), 1.0))
            if kind in TEXT_TYPES:
                vec = text_vectors.get(event.text or "")
                if vec is not None:
                    text.append((t, w, vec))  # the type's weight: text types are never negative
                if kind == "preference":
                    statement = new_tuple(Preference, (event.text or "", ts_ms, event.event_id))
                    self.statements = add_preference(self.statements, statement, limit=spec.max_preferences)
            if item_id is None:
                continue
            info = items.get(item_id)
            if info is not None:
                if info.vector is not None and kind not in TEXT_TYPES:
                    if w > 0:
                        positive.append((t, w, info.vector))
                    elif w < 0:
                        negative.append((t, -w, info.vector))
                if info.attributes:
                    attributes.append((t, info.attribute_keys, w))
            entry = new_tuple(HistoryEntry, (ts_ms, item_id, kind))
            if w > 0:
                popularity.append(new_tuple(PopularityDelta, (item_id, ts_ms, w, source)))
            if kind not in NEGATIVE_TYPES:  # every rating pairs, a low one too (measured on MovieLens: issue 13)
                collect_covisits(self.history, entry, source, covisits, window=covisit_window, history_size=history_size)
            add_history(self.history, entry, size=history_size)
        vectors.add_events(self.positive, positive)
        vectors.add_events(self.negative, negative)
        vectors.add_events(self.text, text)
        self.activity.add_many(counts)
        self.attributes.add_many(attributes)
        result.applied = len(fresh)
        self.events_applied += len(fresh)
        return result

    def _unseen(self, events: Sequence[Event], result: FoldResult,
                tags: Sequence[int] | None) -> list[tuple[str | int, Event]]:  # fmt: skip
        """(tag or id, event) of the events whose ``event_id`` is not among the remembered ones (which
        they join); of producer duplicates within ``events``, the first is kept."""
        recent = self.recent_ids
        fresh: list[tuple[str | int, Event]] = []
        for n, event in enumerate(events):
            h = event_id_hash(event.event_id)
            if _holds_id(recent, h):
                result.duplicates += 1
                continue
            recent += h
            fresh.append((event.event_id if tags is None else tags[n], event))
        excess = len(recent) - 8 * self.spec.recent_event_ids
        if excess > 0:
            del recent[:excess]
        return fresh

    def mark_offset(self, partition: int, offset: int) -> None:
        """Record that everything up to ``offset`` of ``partition`` is in this state.

        :attr:`offsets` (partition -> last applied Kafka offset) is the one record of what the consumer
        applied to this user: stored in the state's blob, written by the same compare-and-set as the
        state (:data:`features.redis.scripts.APPLY_USERS`), read back with it."""
        if offset > self.offsets.get(partition, -1):
            self.offsets[partition] = offset

    # --- read-outs -------------------------------------------------------------------------
    @property
    def preferences(self) -> list[Preference]:
        """The standing preferences shown, oldest first: the kept statements that no newer kept statement
        replaces (:func:`~features.core.preferences.standing_preferences`); at most ``max_preferences``."""
        return standing_preferences(self.statements)

    def embeddings(self, now_ms: int) -> dict[str, np.ndarray]:
        """Unit-length preference direction per horizon (zeros where nothing was seen)."""
        sums, _ = self.positive.read(now_ms / 1000.0)
        return {name: _unit(sums[i]) for i, name in enumerate(self.spec.horizon_names)}

    def negative_embedding(self, now_ms: int) -> np.ndarray:
        return _unit(self.negative.read(now_ms / 1000.0)[0][0])

    def text_embedding(self, now_ms: int) -> np.ndarray:
        return _unit(self.text.read(now_ms / 1000.0)[0][0])

    def attribute_preferences(self, now_ms: int) -> dict[str, float]:
        return self.attributes.read(now_ms / 1000.0)

    def event_counts(self, now_ms: int) -> dict[str, float]:
        """Decayed number of events per type, strongest first."""
        return {k: v for k, v in self.activity.read(now_ms / 1000.0).items() if "=" not in k}

    def interest_clock(self, now_ms: int) -> np.ndarray:
        """Share of (decayed) activity per UTC hour of day; sums to 1 when there is any.

        Every count decays alike, so the shares are the same at any ``now_ms``."""
        values = self.activity.values
        hours = np.array([values.get(key, 0.0) for key in HOUR_KEYS])
        total = hours.sum()
        return hours / total if total > 0 else hours

    def view(self, now_ms: int, anchors: int = 5) -> UserView:
        """The read-outs the scorer uses, at ``now_ms``; ``anchors`` latest positive items for co-visitation."""
        positives = [h.item_id for h in self.history if h.type not in NEGATIVE_TYPES]
        recent: list[str] = []
        for item in reversed(positives):
            if item not in recent:
                recent.append(item)
                if len(recent) == anchors:
                    break
        return UserView(
            embeddings=self.embeddings(now_ms),
            negative=None if self.negative.empty else self.negative_embedding(now_ms),
            text=None if self.text.empty else self.text_embedding(now_ms),
            attributes=self.attribute_preferences(now_ms),
            recent_items=recent[::-1],
            seen=frozenset(h.item_id for h in self.history),
        )

    @property
    def last_event_ms(self) -> int | None:
        return self.history[-1].ts_ms if self.history else None


def fold_users(
    jobs: Sequence[tuple[UserState, Sequence[Event]] | tuple[UserState, Sequence[Event], Sequence[int]]],
    items: Mapping[str, ItemInfo],
    text_vectors: Mapping[str, np.ndarray] | None = None,
) -> list[FoldResult]:
    """Fold each (user, events) job — the same as ``user.fold(events, …)`` one by one, with the
    vector sums of all users updated together (:class:`~features.core.decay.DecayedSumUpdates`).
    Each user state may appear once.

    A job may carry a third element, a tag per event (the consumer's Kafka offsets): each popularity
    and co-visitation delta then carries its event's tag as ``source`` instead of the event id, so the
    caller knows which offset every delta came with."""
    vectors = DecayedSumUpdates()
    texts = text_vectors or {}
    results = [job[0]._fold_into(job[1], items, texts, vectors, job[2] if len(job) > 2 else None) for job in jobs]
    vectors.apply()
    return results


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else np.zeros(vector.shape, dtype=np.float32)
