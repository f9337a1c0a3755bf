"""One set of contract checks that every accumulator of user and item state passes (river's ``checks``).

An accumulator folds observations into a state. Each one is described once, in its family's module under
``tests/features/accumulators/`` (a :class:`~tests.features.accumulators.harness.Contract`: how to build it,
fold a batch, read it at a fixed time, check its bounds, and merge or encode it when it can), and every check
runs over every contract:

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

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.core.events import Event
from features.core.preferences import Preference, add_preference, preferences_conflict, standing_preferences
from features.core.state import StateSpec, UserState
from p13n.config import StateConfig
from tests.features.accumulators.decayed import SPARSE, decayed
from tests.features.accumulators.global_signals import COVISITATION, POPULARITY
from tests.features.accumulators.harness import DIM, HORIZONS, assert_close, cut_batches, folded, scaled
from tests.features.accumulators.lists import (CHAINS, HISTORY, PREFERENCES, STATEMENTS, preference_obs,
                                               shown_by_definition, statement_of)  # fmt: skip
from tests.features.accumulators.memories import MEMORIES
from tests.features.accumulators.user_state import USER_STATE

#: Every accumulator, each described once in its family's module under ``tests/features/accumulators/``: a new
#: accumulator is added here.
CONTRACTS = [
    *[decayed(name, [tau]) for name, tau in HORIZONS.items()],
    decayed("all horizons", list(HORIZONS.values())),
    SPARSE,
    POPULARITY,
    COVISITATION,
    PREFERENCES,
    HISTORY,
    MEMORIES,
    USER_STATE,
]
by_name = pytest.mark.parametrize("contract", CONTRACTS, ids=[c.name for c in CONTRACTS])
checks = settings(max_examples=25, deadline=None)


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
        reference = folded(contract, observations, bounded=bounded)
        other = folded(contract, observations, bounded=bounded, batches=cut_batches(shuffled, rnd))
        assert_close(contract.read(other, observations), contract.read(reference, observations), rel=contract.rel)


@by_name
@checks
@given(data=st.data())
def test_a_replay_is_ignored_or_counted_exactly_twice(contract, data):
    observations = data.draw(contract.observations)
    once = folded(contract, observations)
    twice = folded(contract, observations, batches=[observations, observations])
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
    state = folded(contract, observations, bounded=True, batches=cut_batches(observations, rnd))
    contract.check_bounds(state, observations)


@pytest.mark.parametrize("contract", [c for c in CONTRACTS if c.merge], ids=[c.name for c in CONTRACTS if c.merge])
@checks
@given(data=st.data())
def test_merging_two_halves_equals_folding_them_together(contract, data):
    observations = data.draw(contract.observations)
    cut = data.draw(st.integers(0, len(observations)))
    left, right = folded(contract, observations[:cut]), folded(contract, observations[cut:])
    merged = contract.merge(left, right)
    assert_close(contract.read(merged, observations), contract.read(folded(contract, observations), observations),
                 rel=contract.rel)  # fmt: skip


@pytest.mark.parametrize("contract", [c for c in CONTRACTS if c.codec], ids=[c.name for c in CONTRACTS if c.codec])
@checks
@given(data=st.data())
def test_the_state_round_trips_through_its_codec_and_keeps_folding_alike(contract, data):
    observations = data.draw(contract.observations)
    cut = data.draw(st.integers(1, len(observations)))
    head, tail = observations[:cut], observations[cut:]
    original = folded(contract, head)
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
    folded(contract, observations)
    assert observations == before


def test_the_preference_contract_draws_statements_that_conflict_intransitively():
    """The preference contract's premise: its statements include chains where "same subject" is not transitive
    (the case a newest-wins fold got wrong), so the order and replay checks above exercise them."""
    first, middle, last = "I am not vegetarian anymore", "I am vegetarian", "I am vegan"
    assert {first, middle, last} <= set(STATEMENTS) & set(CHAINS[0])
    assert preferences_conflict(first, middle) and preferences_conflict(middle, last)
    assert not preferences_conflict(first, last)


@settings(max_examples=50, deadline=None)
@given(observations=preference_obs)
def test_standing_preferences_are_the_statements_no_newer_one_replaces(observations):
    """Unbounded, what is shown is exactly the definition over every statement seen (DESIGN.md §3)."""
    box = folded(PREFERENCES, observations)
    assert standing_preferences(box.value) == shown_by_definition([statement_of(o) for o in observations])


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
