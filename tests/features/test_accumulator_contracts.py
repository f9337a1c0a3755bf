"""One set of contract checks that every accumulator of user and item state passes (river's ``checks``).

An accumulator folds observations into a state. Each one below is described once (:class:`Contract`: how to
build it, fold a batch, read it at a fixed time, check its bounds, and merge or encode it when it can), and
every check runs over every contract:

- **order**: any permutation of a fixed set of observations, cut into any batches, gives the same read-out (up
  to float rounding) — DESIGN.md §3's promise that late and out-of-order events are exact;
- **replay**: folding the same observations again leaves an *idempotent* accumulator unchanged (its own event
  ids say what it has seen); an *additive* one counts them twice, exactly, so what keeps a replay out of it
  is the user state's event-id marks (the ``user state`` contract checks those);
- **bounds**: with small bounds, the state never holds more than them, and what a bound drops is what its
  docstring says;
- **merge** (where defined): folding two halves apart and merging equals folding them together;
- **codec** (where the accumulator has its own stored form): the state read back from its bytes reads the same
  and keeps folding the same as the original;
- **inputs**: folding never mutates the observations it is given.

Popularity and co-visitation have no codec of their own (the store keeps them in Redis hashes and sorted sets,
tested against these classes in ``tests/features/test_store.py``); decayed sums, attribute/activity sums,
preferences and history are stored inside the user state (its contract round-trips them all).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.core.decay import DecayedSum, SparseDecayedSum
from features.core.events import Event
from features.core.history import HistoryEntry, add_history
from features.core.memory import MemorySet, MemorySpec, clean_text
from features.core.memory_codec import decode_memories, encode_memories
from features.core.preferences import Preference, add_preference, preferences_conflict, standing_preferences
from features.core.signals import CoVisitation, Popularity
from features.core.state import ItemInfo, StateSpec, UserState
from features.core.state_codec import decode_state, encode_state
from p13n.config import StateConfig

HOUR_S = 3600.0
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
DIM = 4
HORIZONS = StateConfig().horizons  # session: 1 hour, long: 30 days

# ----------------------------------------------------------------------------------------------------------------
# comparing read-outs


def assert_close(a: Any, b: Any, *, rel: float = 1e-4, abs_: float = 1e-6, vector_rel: float = 0.0,
                 path: str = "") -> None:
    """Structural equality with floats (and float arrays) compared up to rounding; ``vector_rel`` adds an
    absolute tolerance of that share of an array's largest magnitude (a vector stored as float16 is exact to
    about 5e-4 of its largest component, not of each component)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_close(a[key], b[key], rel=rel, abs_=abs_, vector_rel=vector_rel, path=f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: {a!r} != {b!r}"
        for n, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, rel=rel, abs_=abs_, vector_rel=vector_rel, path=f"{path}[{n}]")
    elif isinstance(a, np.ndarray):
        scale = float(np.max(np.abs(b))) if np.size(b) else 0.0
        np.testing.assert_allclose(a, b, rtol=rel, atol=abs_ + vector_rel * scale, err_msg=path)
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=rel, abs=abs_), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def scaled(value: Any, factor: float) -> Any:
    """Every number of a read-out times ``factor`` (what an additive accumulator reads after a replay)."""
    if isinstance(value, dict):
        return {k: scaled(v, factor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scaled(v, factor) for v in value)
    if isinstance(value, np.ndarray):
        return value * factor
    if isinstance(value, float):
        return value * factor
    return value


# ----------------------------------------------------------------------------------------------------------------
# the contracts


@dataclass(frozen=True)
class Contract:
    """How the checks drive one accumulator. ``new(bounded)`` builds an empty state (``bounded``: with bounds
    small enough to bind); ``fold(state, batch)`` folds a batch in place; ``read(state, batch)`` is a
    comparable read-out at a fixed time after every observation of ``batch`` (the whole set folded);
    ``check_bounds(state, observations)`` asserts the bounds and what they keep."""

    name: str
    observations: st.SearchStrategy  # a list of distinct observations
    new: Callable[[bool], Any]
    fold: Callable[[Any, list], None]
    read: Callable[[Any, list], Any]
    check_bounds: Callable[[Any, list], None]
    replay: str  # "idempotent" or "additive"
    order_when_bounded: bool = False  # order independence holds with binding bounds too
    merge: Callable[[Any, Any], Any] | None = None
    codec: Callable[[Any], Any] | None = None  # state -> state decoded from its bytes
    codec_vector_rel: float = 0.0  # what the stored form rounds vectors to (share of the largest magnitude)
    rel: float = 1e-4


def _now_s(observations: list, t_of: Callable[[Any], float]) -> float:
    return max((t_of(o) for o in observations), default=0.0) + 60.0


# --- decayed sums (one contract per horizon, and all horizons at once) ------------------------------------------
_decayed_obs = st.lists(
    st.tuples(st.floats(0, 10 * 86400, allow_nan=False), st.floats(0.1, 8.0),
              st.lists(st.floats(-1, 1, allow_nan=False), min_size=DIM, max_size=DIM)),
    min_size=1, max_size=30,
)  # fmt: skip


def _decayed(name: str, taus: list[float]) -> Contract:
    def fold(state: DecayedSum, batch: list) -> None:
        if batch:
            state.update_many([o[0] for o in batch], [o[1] for o in batch], [o[2] for o in batch])

    def read(state: DecayedSum, observations: list) -> Any:
        sums, weights = state.read(_now_s(observations, lambda o: o[0]))
        return {"sums": sums.astype(np.float64), "weights": weights}

    def bounds(state: DecayedSum, observations: list) -> None:
        sums, weights = state.read(_now_s(observations, lambda o: o[0]))
        assert np.all(np.isfinite(sums)) and np.all(weights >= 0)
        # |S| <= W·max|x| per horizon: a decayed sum is a weighted mean's numerator
        assert np.all(np.abs(sums) <= weights[:, None] * 1.0 + 1e-4)
        assert state.t_ref == max(o[0] for o in observations)

    def codec(state: DecayedSum) -> DecayedSum:
        return DecayedSum.restore(state.taus, state.sums.copy(), list(state.weights), state.t_ref)

    return Contract(
        name=f"decayed sum [{name}]", observations=_decayed_obs,
        new=lambda bounded: DecayedSum(taus, DIM), fold=fold, read=read, check_bounds=bounds, replay="additive",
        order_when_bounded=True, merge=lambda a, b: a.merge(b), rel=1e-4,
    )  # fmt: skip


# --- attribute preferences and activity counts (sparse decayed sums) ---------------------------------------------
_KEYS = [f"category=c{n}" for n in range(6)]
_sparse_obs = st.lists(
    st.tuples(st.floats(0, 10 * 86400, allow_nan=False), st.lists(st.sampled_from(_KEYS), min_size=1, max_size=3,
                                                                  unique=True),
              st.floats(0.1, 8.0)),
    min_size=1, max_size=30,
)  # fmt: skip
_SPARSE_TAU = 30 * 86400.0


def _sparse_bounds(state: SparseDecayedSum, observations: list) -> None:
    assert len(state.values) <= state.max_keys
    # the bound keeps the strongest keys: any key it dropped is no stronger than the weakest kept
    # (up to the ones a later observation revived), checked against the exact unbounded sums
    exact = SparseDecayedSum(state.tau, len(_KEYS))
    exact.add_many([(t, tuple(keys), amount) for t, keys, amount in observations])
    now = _now_s(observations, lambda o: o[0])
    kept, truth = state.read(now), exact.read(now)
    for key, value in kept.items():
        assert 0 < value <= truth[key] * (1 + 1e-9)  # positive amounts: a kept key never overshoots its sum


_sparse = Contract(
    name="attribute / activity sums (sparse decayed)", observations=_sparse_obs,
    new=lambda bounded: SparseDecayedSum(_SPARSE_TAU, 2 if bounded else len(_KEYS)),
    fold=lambda state, batch: state.add_many([(t, tuple(keys), amount) for t, keys, amount in batch]),
    read=lambda state, observations: state.read(_now_s(observations, lambda o: o[0])),
    check_bounds=_sparse_bounds, replay="additive",
)  # fmt: skip


# --- popularity (forward decay) ---------------------------------------------------------------------------------
_ITEMS = [f"i{n}" for n in range(8)]
_popularity_obs = st.lists(
    st.tuples(st.sampled_from(_ITEMS), st.integers(0, 40 * DAY_MS), st.floats(0.1, 8.0)), min_size=1, max_size=30,
)
#: Short enough that 40 days pass the rescaling exponent (60 time constants) many times over.
_POPULARITY_TAU_S = 3 * HOUR_S


def _popularity_read(state: Popularity, observations: list) -> Any:
    now_ms = max(o[1] for o in observations) + 60_000
    return dict(zip(_ITEMS, state.read(_ITEMS, now_ms)))


def _popularity_bounds(state: Popularity, observations: list) -> None:
    scores = list(state.scores.values())
    assert all(np.isfinite(s) and s >= 0 for s in scores)
    # forward decay rescales before an increment's exponent passes RESCALE_EXPONENT: stored numbers stay far
    # from overflow however long the stream
    assert max(scores) <= sum(o[2] for o in observations) * np.exp(60.0)


_popularity = Contract(
    name="popularity (forward decay)", observations=_popularity_obs,
    new=lambda bounded: Popularity(_POPULARITY_TAU_S),
    fold=lambda state, batch: [state.add(item, ts, w) for item, ts, w in batch] and None,
    read=_popularity_read, check_bounds=_popularity_bounds, replay="additive", order_when_bounded=True,
    rel=1e-6,
)  # fmt: skip


# --- co-visitation (Space-Saving rows) --------------------------------------------------------------------------
_covisit_obs = st.lists(st.tuples(st.sampled_from(_ITEMS), st.sampled_from(_ITEMS)).filter(lambda p: p[0] != p[1]),
                        min_size=1, max_size=40)


def _covisit_read(state: CoVisitation, observations: list) -> Any:
    return {"rows": {item: {m: float(c) for m, c in state.neighbours(item).items()} for item in _ITEMS},
            "cosine": state.cosine_matrix(_ITEMS, _ITEMS)}


def _covisit_bounds(state: CoVisitation, observations: list) -> None:
    true: dict[str, dict[str, float]] = {}
    for a, b in observations:
        for x, y in ((a, b), (b, a)):
            true.setdefault(x, {})[y] = true.setdefault(x, {}).get(y, 0.0) + 1.0
    for item, row in state.counts.items():
        assert len(row) <= state.top_m
        floor = min(row.values())
        total = sum(true[item].values())
        assert sum(row.values()) == pytest.approx(total)  # Space-Saving keeps the row's total exactly
        for member, count in row.items():  # over-estimates by at most the row's minimum
            assert true[item].get(member, 0.0) <= count <= true[item].get(member, 0.0) + floor
        for member, count in true[item].items():  # a heavy hitter is never dropped
            if count > total / state.top_m:
                assert member in row


_covisitation = Contract(
    name="co-visitation (Space-Saving)", observations=_covisit_obs,
    new=lambda bounded: CoVisitation(top_m=2 if bounded else len(_ITEMS)),
    fold=lambda state, batch: state.add(batch), read=_covisit_read, check_bounds=_covisit_bounds, replay="additive",
)  # fmt: skip


# --- standing preferences (newest wins on conflict, bounded) ----------------------------------------------------
#: Statements the rules treat specially, among them chains where "about the same thing" is not transitive ("I am
#: not vegetarian anymore" meets "I am vegetarian", which meets "I am vegan"; the first and last do not meet).
_STATEMENTS = ["I am vegetarian", "I am vegan", "I am not vegetarian anymore", "I'm not vegan", "I live in Berlin",
               "I live in Paris", "I don't live in Paris", "I am allergic to nuts", "I am allergic to cats",
               "I'm not allergic to nuts", "I like jazz", "I don't like jazz", "I hate jazz", "My name is Ana",
               "my name is Bea!", "I am 30 years old", "I am 31", "no", "No."]  # fmt: skip
_WORDS = ["I", "I'm", "am", "not", "no", "longer", "never", "really", "anymore", "do", "don't", "like", "love",
          "hate", "vegetarian", "vegan", "keto", "live", "in", "from", "work", "at", "Paris", "Berlin", "my", "name",
          "favourite", "colour", "is", "blue", "allergic", "to", "nuts", "cats", "jazz", "30", "31", ",",
          "!"]  # fmt: skip
#: Arbitrary statements: the special ones, random sentences of the words the rules read, and any text at all.
_statement_texts = st.one_of(
    st.sampled_from(_STATEMENTS),
    st.lists(st.sampled_from(_WORDS), min_size=1, max_size=6).map(" ".join),
    st.text(max_size=12),
)  # fmt: skip
#: Observations (event number, hour, text) drawn from a small pool of statements, so that statements meet: half
#: of the pools are chains where "about the same thing" is not transitive (each meets the next, the ends do not).
_CHAINS = [["I am not vegetarian anymore", "I am vegetarian", "I am vegan"],
           ["I don't live in Paris", "I live in Paris", "I live in Berlin"],
           ["I'm not vegan", "I am vegan", "I am vegetarian", "I am not vegetarian anymore"]]  # fmt: skip
_statement_pools = st.one_of(st.sampled_from(_CHAINS), st.lists(_statement_texts, min_size=1, max_size=6, unique=True))
_preference_obs = _statement_pools.flatmap(
    lambda pool: st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 100), st.sampled_from(pool)),
                          min_size=1, max_size=12, unique_by=lambda o: o[0])
)  # fmt: skip


def _statement_of(observation: tuple) -> Preference:
    n, ts, text = observation
    return Preference(text, ts * HOUR_MS, f"e{n}")


def _shown_by_definition(statements: list[Preference]) -> list[Preference]:
    """What standing preferences promise, by brute force: every statement that no newer one is about the same thing
    as, oldest first."""
    key = lambda p: (p.ts_ms, p.event_id, p.text)  # noqa: E731
    return sorted((p for p in statements if not any(key(q) > key(p) and preferences_conflict(p.text, q.text)
                                                     for q in statements)), key=key)  # fmt: skip


class _Box:
    """A mutable holder for accumulators whose fold returns a new value."""

    def __init__(self, value: Any, limit: int) -> None:
        self.value, self.limit = value, limit


def _fold_preferences(box: _Box, batch: list) -> None:
    for observation in batch:
        box.value = add_preference(box.value, _statement_of(observation), limit=box.limit)


def _preference_bounds(box: _Box, observations: list) -> None:
    kept, shown = box.value, standing_preferences(box.value)
    statements = [_statement_of(o) for o in observations]
    key = lambda p: (p.ts_ms, p.event_id, p.text)  # noqa: E731
    assert len(kept) <= box.limit and kept == sorted(kept, key=key) and set(kept) <= set(statements)
    # the bound drops the oldest statements, and statements a newer kept one conflicts with (an older wording)
    for p in set(statements) - set(kept):
        assert key(p) < key(kept[0]) or any(key(q) > key(p) and preferences_conflict(p.text, q.text) for q in kept)
    # what is shown of the kept statements is what would be shown of them all; the newest is always shown
    assert shown == [p for p in _shown_by_definition(statements) if p in kept]
    assert max(statements, key=key) in shown
    for i, p in enumerate(shown):
        assert not any(preferences_conflict(p.text, q.text) for q in shown[i + 1 :]), shown


_preferences = Contract(
    name="standing preferences", observations=_preference_obs,
    new=lambda bounded: _Box([], 2 if bounded else 100), fold=_fold_preferences,
    read=lambda box, observations: standing_preferences(box.value), check_bounds=_preference_bounds,
    replay="idempotent", order_when_bounded=True,
)  # fmt: skip


# --- recent history (time-ordered, newest kept) -----------------------------------------------------------------
_history_obs = st.lists(
    st.tuples(st.integers(0, 500), st.sampled_from(_ITEMS), st.sampled_from(["view", "click", "skip"])),
    min_size=1, max_size=30, unique=True,
)  # fmt: skip


def _fold_history(box: _Box, batch: list) -> None:
    for ts, item, kind in batch:
        add_history(box.value, HistoryEntry(ts * HOUR_MS, item, kind), size=box.limit)


def _history_bounds(box: _Box, observations: list) -> None:
    entries = sorted(HistoryEntry(ts * HOUR_MS, item, kind) for ts, item, kind in observations)
    assert box.value == entries[-box.limit :]  # the newest `size`, in event-time order


_history = Contract(
    name="recent history", observations=_history_obs,
    new=lambda bounded: _Box([], 3 if bounded else 1000), fold=_fold_history,
    read=lambda box, observations: list(box.value), check_bounds=_history_bounds,
    # a replayed entry is a second entry: the user state's event-id marks keep replays out (its contract)
    replay="additive-entries", order_when_bounded=True,
)  # fmt: skip


# --- conversational memories ------------------------------------------------------------------------------------
_TEXTS = ["ok", " ok\n", "I adopted a dog named Max", "We moved to Lisbon", "thanks!", "I love pottery"]
_VECTORS = {t: np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
            for i, t in enumerate(dict.fromkeys(_TEXTS + [clean_text(t, 480) for t in _TEXTS]))}  # fmt: skip
_memory_obs = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 60 * DAY_MS), st.sampled_from(_TEXTS),
                                 st.sampled_from(["user", "assistant"])),
                       min_size=1, max_size=25, unique_by=lambda o: o[0])  # fmt: skip


def _message(n: int, ts: int, text: str, role: str) -> Event:
    return Event(event_id=f"e{n}", user_id="u", type="message", ts_ms=ts, text=text, session_id="s",
                 context={"role": role})  # fmt: skip


def _memory_read(memories: MemorySet, observations: list) -> Any:
    return [(m.role, m.text, tuple(m.mentions), m.vector) for m in memories.memories()]


def _memory_bounds(memories: MemorySet, observations: list) -> None:
    assert memories.mentions == min(memories.spec.max_mentions, len(observations))
    kept = [m for memory in memories.memories() for m in memory.mentions]
    assert len(kept) == memories.mentions and all(memory.mentions for memory in memories.memories())
    assert all(m.event_id in memories for m in kept)


def _memory_codec(memories: MemorySet) -> MemorySet:
    return decode_memories(encode_memories(memories, "f2"), memories.spec, DIM)


_memories = Contract(
    name="conversational memories", observations=_memory_obs,
    new=lambda bounded: MemorySet(MemorySpec(max_mentions=3 if bounded else 1000), DIM),
    fold=lambda memories, batch: memories.fold([_message(*o) for o in batch], _VECTORS) and None,
    read=_memory_read, check_bounds=_memory_bounds, replay="idempotent", order_when_bounded=True,
    codec=_memory_codec, codec_vector_rel=2e-3,
)  # fmt: skip


# --- the whole user state (the consumer's fold) -----------------------------------------------------------------
_USER_ITEMS = {
    item: ItemInfo(vector=np.random.default_rng(n).standard_normal(DIM).astype(np.float32),
                   attributes={"category": f"c{n % 3}", "brand": f"b{n % 2}"}, text=f"item {n}")
    for n, item in enumerate(_ITEMS)
}  # fmt: skip
_PREFERENCE_VECTORS = {t: np.random.default_rng(100 + i).standard_normal(DIM).astype(np.float32)
                       for i, t in enumerate(_STATEMENTS)}  # fmt: skip
_user_obs = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 40 * 24),
              st.sampled_from(["view", "click", "cart", "purchase", "like", "dislike", "skip", "rating", "preference"]),
              st.sampled_from(_ITEMS), st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]), _statement_texts),
    min_size=1, max_size=30, unique_by=lambda o: o[0],
)  # fmt: skip


def _user_event(n: int, hour: int, kind: str, item: str, value: float, text: str) -> Event:
    if kind == "preference":
        return Event(event_id=f"e{n}", user_id="u", type=kind, ts_ms=hour * HOUR_MS, text=text)
    return Event(event_id=f"e{n}", user_id="u", type=kind, ts_ms=hour * HOUR_MS, item_id=item,
                 value=value if kind == "rating" else None)  # fmt: skip


def _user_spec(bounded: bool) -> StateSpec:
    if bounded:
        config = StateConfig(history_size=3, recent_event_ids=4, max_preferences=2, max_attribute_values=2,
                             covisit_window=2)  # fmt: skip
    else:
        config = StateConfig(history_size=1000, recent_event_ids=1000, max_preferences=100, max_attribute_values=64)
    return StateSpec.from_config(config, dim=DIM)


def _user_read(user: UserState, observations: list) -> Any:
    now_ms = max(o[1] for o in observations) * HOUR_MS + 60_000
    now_s = now_ms / 1000.0
    return {
        "positive": user.positive.read(now_s)[0].astype(np.float64),
        "negative": user.negative.read(now_s)[0].astype(np.float64),
        "text": user.text.read(now_s)[0].astype(np.float64),
        "weights": [user.positive.read(now_s)[1], user.negative.read(now_s)[1], user.text.read(now_s)[1]],
        "attributes": user.attribute_preferences(now_ms),
        "activity": user.activity.read(now_s),
        "preferences": list(user.preferences),
        "history": list(user.history),
        "events_applied": user.events_applied,
    }


def _user_bounds(user: UserState, observations: list) -> None:
    spec = user.spec
    assert len(user.history) <= spec.history_size and user.history == sorted(user.history)
    assert len(user.preferences) <= spec.max_preferences
    assert len(user.attributes.values) <= spec.max_attribute_values
    assert len(user.recent_ids) <= 8 * spec.recent_event_ids
    assert user.events_applied == len(observations)  # distinct event ids, each folded once


_user_state = Contract(
    name="user state (the fold)", observations=_user_obs,
    new=lambda bounded: UserState.new(_user_spec(bounded)),
    fold=lambda user, batch: user.fold([_user_event(*o) for o in batch], _USER_ITEMS, _PREFERENCE_VECTORS) and None,
    read=_user_read, check_bounds=_user_bounds, replay="idempotent",
    # the negative and text sums are stored as float16 (features/core/state_codec.py), the horizons' as float32
    codec=lambda user: decode_state(encode_state(user), user.spec), codec_vector_rel=2e-3,
)  # fmt: skip


CONTRACTS = [
    *[_decayed(name, [tau]) for name, tau in HORIZONS.items()],
    _decayed("all horizons", list(HORIZONS.values())),
    _sparse,
    _popularity,
    _covisitation,
    _preferences,
    _history,
    _memories,
    _user_state,
]
by_name = pytest.mark.parametrize("contract", CONTRACTS, ids=[c.name for c in CONTRACTS])
checks = settings(max_examples=25, deadline=None)


def _folded(contract: Contract, observations: list, *, bounded: bool = False, batches: list[list] | None = None):
    state = contract.new(bounded)
    for batch in batches if batches is not None else [observations]:
        contract.fold(state, batch)
    return state


def _cut(items: list, rnd) -> list[list]:
    batches, at = [], 0
    while at < len(items):
        size = rnd.randint(1, 6)
        batches.append(items[at : at + size])
        at += size
    return batches


# ----------------------------------------------------------------------------------------------------------------
# the checks


@by_name
def test_the_contract_names_a_known_replay_kind(contract):
    assert contract.replay in ("idempotent", "additive", "additive-entries")


@by_name
@checks
@given(data=st.data())
def test_any_order_and_batching_gives_the_same_state(contract, data):
    observations = data.draw(contract.observations)
    rnd = data.draw(st.randoms(use_true_random=False))
    shuffled = rnd.sample(observations, k=len(observations))
    for bounded in (False, True) if contract.order_when_bounded else (False,):
        reference = _folded(contract, observations, bounded=bounded)
        other = _folded(contract, observations, bounded=bounded, batches=_cut(shuffled, rnd))
        assert_close(contract.read(other, observations), contract.read(reference, observations), rel=contract.rel)


@by_name
@checks
@given(data=st.data())
def test_a_replay_is_ignored_or_counted_exactly_twice(contract, data):
    observations = data.draw(contract.observations)
    once = _folded(contract, observations)
    twice = _folded(contract, observations, batches=[observations, observations])
    expected = contract.read(once, observations)
    if contract.replay == "additive":
        expected = scaled(expected, 2.0)
    elif contract.replay == "additive-entries":
        expected = sorted(expected + expected)
    assert_close(contract.read(twice, observations), expected, rel=contract.rel)


@by_name
@checks
@given(data=st.data())
def test_bounds_hold_and_keep_what_they_promise(contract, data):
    observations = data.draw(contract.observations)
    rnd = data.draw(st.randoms(use_true_random=False))
    state = _folded(contract, observations, bounded=True, batches=_cut(observations, rnd))
    contract.check_bounds(state, observations)


@pytest.mark.parametrize("contract", [c for c in CONTRACTS if c.merge], ids=[c.name for c in CONTRACTS if c.merge])
@checks
@given(data=st.data())
def test_merging_two_halves_equals_folding_them_together(contract, data):
    observations = data.draw(contract.observations)
    cut = data.draw(st.integers(0, len(observations)))
    left, right = _folded(contract, observations[:cut]), _folded(contract, observations[cut:])
    merged = contract.merge(left, right)
    assert_close(contract.read(merged, observations), contract.read(_folded(contract, observations), observations),
                 rel=contract.rel)  # fmt: skip


@pytest.mark.parametrize("contract", [c for c in CONTRACTS if c.codec], ids=[c.name for c in CONTRACTS if c.codec])
@checks
@given(data=st.data())
def test_the_state_round_trips_through_its_codec_and_keeps_folding_alike(contract, data):
    observations = data.draw(contract.observations)
    cut = data.draw(st.integers(1, len(observations)))
    head, tail = observations[:cut], observations[cut:]
    original = _folded(contract, head)
    decoded = contract.codec(original)
    tolerance = {"rel": contract.rel, "vector_rel": contract.codec_vector_rel}
    assert_close(contract.read(decoded, head), contract.read(original, head), **tolerance)
    contract.fold(original, tail)
    contract.fold(decoded, tail)
    assert_close(contract.read(decoded, observations), contract.read(original, observations), **tolerance)


@by_name
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_folding_does_not_mutate_its_inputs(contract, data):
    observations = data.draw(contract.observations)
    before = copy.deepcopy(observations)
    _folded(contract, observations)
    assert observations == before


def test_the_preference_contract_draws_statements_that_conflict_intransitively():
    """The preference contract's premise: its statements include chains where "same subject" is not transitive
    (the case a newest-wins fold got wrong), so the order and replay checks above exercise them."""
    first, middle, last = "I am not vegetarian anymore", "I am vegetarian", "I am vegan"
    assert {first, middle, last} <= set(_STATEMENTS) & set(_CHAINS[0])
    assert preferences_conflict(first, middle) and preferences_conflict(middle, last)
    assert not preferences_conflict(first, last)


@settings(max_examples=50, deadline=None)
@given(observations=_preference_obs)
def test_standing_preferences_are_the_statements_no_newer_one_replaces(observations):
    """Unbounded, what is shown is exactly the definition over every statement seen (DESIGN.md §3)."""
    box = _folded(_preferences, observations)
    assert standing_preferences(box.value) == _shown_by_definition([_statement_of(o) for o in observations])


#: "I am not vegetarian anymore" is about the same thing as "I am vegetarian", which is about the same thing as
#: "I am vegan", but the first and the last are not (a negative statement only meets its own claim): the
#: relation is not transitive; a newest-wins fold then depended on the order and on replays.
_NOT_TRANSITIVE = [Preference("I am not vegetarian anymore", 1, "e1"), Preference("I am vegetarian", 2, "e2"),
                   Preference("I am vegan", 3, "e3")]  # fmt: skip


def test_standing_preferences_with_a_non_transitive_conflict_do_not_depend_on_order():
    def fold(order: list[Preference]) -> list[Preference]:
        statements: list[Preference] = []
        for new in order:
            statements = add_preference(statements, new, limit=10)
        return standing_preferences(statements)

    in_order = fold(_NOT_TRANSITIVE)
    assert in_order == [_NOT_TRANSITIVE[2]]  # each statement replaced the one before it
    assert fold(_NOT_TRANSITIVE[::-1]) == in_order
    assert fold(_NOT_TRANSITIVE + _NOT_TRANSITIVE[:2]) == in_order  # a replay of the replaced ones


def test_a_replay_past_the_event_id_marks_does_not_bring_a_replaced_preference_back():
    """In the user state: the replayed event's id is no longer among the remembered ones (recent_event_ids=1), so
    the fold applies it again, and the kept statements still hide it."""
    user = UserState.new(StateSpec.from_config(StateConfig(recent_event_ids=1), dim=DIM))
    events = [Event(event_id=p.event_id, user_id="u", type="preference", ts_ms=p.ts_ms, text=p.text)
              for p in _NOT_TRANSITIVE]  # fmt: skip
    for event in events:
        user.fold([event], {})
    assert user.fold([events[0]], {}).applied == 1  # forgotten by the marks: folded again
    assert [p.text for p in user.preferences] == ["I am vegan"]
