"""Contracts of the bounded lists of a user: standing preferences (newest wins on conflict) and recent history
(newest kept)."""

from __future__ import annotations

from hypothesis import strategies as st

from features.core.history import HistoryEntry, add_history
from features.core.preferences import Preference, add_preference, preferences_conflict, standing_preferences
from tests.features.accumulators.harness import HOUR_MS, ITEMS, Box, Contract

# --- standing preferences (newest wins on conflict, bounded) ----------------------------------------------------
#: Statements the rules treat specially, among them chains where "about the same thing" is not transitive ("I am
#: not vegetarian anymore" meets "I am vegetarian", which meets "I am vegan"; the first and last do not meet).
STATEMENTS = ["I am vegetarian", "I am vegan", "I am not vegetarian anymore", "I'm not vegan", "I live in Berlin",
               "I live in Paris", "I don't live in Paris", "I am allergic to nuts", "I am allergic to cats",
               "I'm not allergic to nuts", "I like jazz", "I don't like jazz", "I hate jazz", "My name is Ana",
               "my name is Bea!", "I am 30 years old", "I am 31", "no", "No."]  # fmt: skip
_WORDS = ["I", "I'm", "am", "not", "no", "longer", "never", "really", "anymore", "do", "don't", "like", "love",
          "hate", "vegetarian", "vegan", "keto", "live", "in", "from", "work", "at", "Paris", "Berlin", "my", "name",
          "favourite", "colour", "is", "blue", "allergic", "to", "nuts", "cats", "jazz", "30", "31", ",",
          "!"]  # fmt: skip
#: Arbitrary statements: the special ones, random sentences of the words the rules read, and any text at all.
statement_texts = st.one_of(
    st.sampled_from(STATEMENTS),
    st.lists(st.sampled_from(_WORDS), min_size=1, max_size=6).map(" ".join),
    st.text(max_size=12),
)  # fmt: skip
#: Observations (event number, hour, text) drawn from a small pool of statements, so that statements meet: half
#: of the pools are chains where "about the same thing" is not transitive (each meets the next, the ends do not).
CHAINS = [["I am not vegetarian anymore", "I am vegetarian", "I am vegan"],
           ["I don't live in Paris", "I live in Paris", "I live in Berlin"],
           ["I'm not vegan", "I am vegan", "I am vegetarian", "I am not vegetarian anymore"]]  # fmt: skip
_statement_pools = st.one_of(st.sampled_from(CHAINS), st.lists(statement_texts, min_size=1, max_size=6, unique=True))
preference_obs = _statement_pools.flatmap(
    lambda pool: st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 100), st.sampled_from(pool)),
                          min_size=1, max_size=12, unique_by=lambda o: o[0])
)  # fmt: skip


def statement_of(observation: tuple) -> Preference:
    n, ts, text = observation
    return Preference(text, ts * HOUR_MS, f"e{n}")


def shown_by_definition(statements: list[Preference]) -> list[Preference]:
    """What standing preferences promise, by brute force: every statement that no newer one is about the same thing
    as, oldest first."""
    key = lambda p: (p.ts_ms, p.event_id, p.text)  # noqa: E731
    return sorted((p for p in statements if not any(key(q) > key(p) and preferences_conflict(p.text, q.text)
                                                     for q in statements)), key=key)  # fmt: skip



def _fold_preferences(box: Box, batch: list) -> None:
    for observation in batch:
        box.value = add_preference(box.value, statement_of(observation), limit=box.limit)


def _preference_bounds(box: Box, observations: list) -> None:
    kept, shown = box.value, standing_preferences(box.value)
    statements = [statement_of(o) for o in observations]
    key = lambda p: (p.ts_ms, p.event_id, p.text)  # noqa: E731
    assert len(kept) <= box.limit and kept == sorted(kept, key=key) and set(kept) <= set(statements)
    # the bound drops the oldest statements, and statements a newer kept one conflicts with (an older wording)
    for p in set(statements) - set(kept):
        assert key(p) < key(kept[0]) or any(key(q) > key(p) and preferences_conflict(p.text, q.text) for q in kept)
    # what is shown of the kept statements is what would be shown of them all; the newest is always shown
    assert shown == [p for p in shown_by_definition(statements) if p in kept]
    assert max(statements, key=key) in shown
    for i, p in enumerate(shown):
        assert not any(preferences_conflict(p.text, q.text) for q in shown[i + 1 :]), shown


PREFERENCES = Contract(
    name="standing preferences", observations=preference_obs,
    new=lambda bounded: Box([], 2 if bounded else 100), fold=_fold_preferences,
    read=lambda box, observations: standing_preferences(box.value), check_bounds=_preference_bounds,
    replay="idempotent", order_when_bounded=True,
)  # fmt: skip


# --- recent history (time-ordered, newest kept) -----------------------------------------------------------------
_history_obs = st.lists(
    st.tuples(st.integers(0, 500), st.sampled_from(ITEMS), st.sampled_from(["view", "click", "skip"])),
    min_size=1, max_size=30, unique=True,
)  # fmt: skip


def _fold_history(box: Box, batch: list) -> None:
    for ts, item, kind in batch:
        add_history(box.value, HistoryEntry(ts * HOUR_MS, item, kind), size=box.limit)


def _history_bounds(box: Box, observations: list) -> None:
    entries = sorted(HistoryEntry(ts * HOUR_MS, item, kind) for ts, item, kind in observations)
    assert box.value == entries[-box.limit :]  # the newest `size`, in event-time order


HISTORY = Contract(
    name="recent history", observations=_history_obs,
    new=lambda bounded: Box([], 3 if bounded else 1000), fold=_fold_history,
    read=lambda box, observations: list(box.value), check_bounds=_history_bounds,
    # a replayed entry is a second entry: the user state's event-id marks keep replays out (its contract)
    replay="additive-entries", order_when_bounded=True,
)  # fmt: skip
