"""User state: the fold's semantics, order independence of the whole state, and its binary form."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.core.events import Event
from features.core.state import ItemInfo, StateSpec, UserState, fold_users
from features.core.state_codec import StateFormatError, decode_state, encode_state
from p13n.config import StateConfig

DIM = 6
SPEC = StateSpec.from_config(StateConfig(), dim=DIM)
ITEMS = {
    f"i{n}": ItemInfo(vector=np.random.default_rng(n).standard_normal(DIM).astype(np.float32),
                      attributes={"category": f"c{n % 3}", "brand": f"b{n % 2}"}, text=f"item {n}")  # fmt: skip
    for n in range(12)
}
HOUR = 3_600_000


def ev(n: int, etype: str, item: str | None, ts: int, **extra) -> Event:
    return Event(event_id=f"e{n}", user_id="u", type=etype, ts_ms=ts, item_id=item, **extra)


def test_negatives_are_kept_apart_from_positives():
    user = UserState.new(SPEC)
    user.fold([ev(1, "purchase", "i1", HOUR), ev(2, "dislike", "i2", HOUR)], ITEMS)
    pos, _ = user.positive.read(HOUR / 1000)
    neg, _ = user.negative.read(HOUR / 1000)
    np.testing.assert_allclose(pos[1], 8.0 * ITEMS["i1"].vector, rtol=1e-6)  # purchase weight 8, not cancelled
    np.testing.assert_allclose(neg[0], 5.0 * ITEMS["i2"].vector, rtol=1e-3)
    assert user.attribute_preferences(HOUR)["category=c2"] == pytest.approx(-5.0)


def test_ratings_map_their_value_to_a_signed_weight():
    user = UserState.new(SPEC)
    user.fold([ev(1, "rating", "i1", HOUR, value=5.0), ev(2, "rating", "i2", HOUR, value=1.0)], ITEMS)
    assert not user.positive.empty and not user.negative.empty
    assert user.attribute_preferences(HOUR)["category=c1"] == pytest.approx(4.0)  # (5 - 3) / 2 * 4


def test_duplicate_event_ids_are_applied_once_even_across_batches():
    user = UserState.new(SPEC)
    first = user.fold([ev(1, "click", "i1", HOUR)], ITEMS)
    second = user.fold([ev(1, "click", "i1", HOUR), ev(2, "click", "i3", HOUR)], ITEMS)
    assert (first.applied, second.applied, second.duplicates) == (1, 1, 1)
    assert user.event_counts(HOUR)["click"] == pytest.approx(2.0)


def test_recent_event_ids_are_bounded():
    spec = StateSpec.from_config(StateConfig(recent_event_ids=3), dim=DIM)
    user = UserState.new(spec)
    user.fold([ev(n, "view", "i1", HOUR + n) for n in range(10)], ITEMS)
    again = user.fold([ev(9, "view", "i1", HOUR + 9), ev(6, "view", "i1", HOUR + 6)], ITEMS)
    assert (again.applied, again.duplicates) == (1, 1)  # 7, 8, 9 remembered; 6 forgotten
    assert len(user.recent_ids) == 3 * 8


def test_history_is_bounded_and_sorted_by_event_time():
    spec = StateSpec.from_config(StateConfig(history_size=4), dim=DIM)
    user = UserState.new(spec)
    user.fold([ev(n, "view", f"i{n}", (10 - n) * HOUR) for n in range(8)], ITEMS)
    assert [h.ts_ms for h in user.history] == sorted(h.ts_ms for h in user.history)
    assert [h.item_id for h in user.history] == ["i3", "i2", "i1", "i0"]  # the 4 newest by event time


def test_standing_preferences_newest_wins_on_conflict_whatever_the_order():
    old = ev(1, "preference", None, HOUR, text="I am vegetarian")
    new = ev(2, "preference", None, 2 * HOUR, text="I am not vegetarian anymore")
    other = ev(3, "preference", None, HOUR, text="I live in Berlin")
    for order in ([old, new, other], [new, other, old]):
        user = UserState.new(SPEC)
        for event in order:
            user.fold([event], ITEMS)
        assert [p.text for p in user.preferences] == ["I live in Berlin", "I am not vegetarian anymore"]


def test_preferences_are_bounded():
    spec = StateSpec.from_config(StateConfig(max_preferences=2), dim=DIM)
    user = UserState.new(spec)
    topics = ["cats", "jazz", "tennis", "sushi"]
    user.fold([ev(n, "preference", None, n * HOUR, text=f"I like {t}") for n, t in enumerate(topics)], ITEMS)
    assert [p.text for p in user.preferences] == ["I like tennis", "I like sushi"]


def test_covisits_pair_an_item_with_the_items_just_before_it():
    spec = StateSpec.from_config(StateConfig(covisit_window=2), dim=DIM)
    user = UserState.new(spec)
    result = user.fold([ev(n, "click", f"i{n}", n * HOUR) for n in range(1, 5)], ITEMS)
    assert [(a, b, d) for a, b, d, _ in result.covisits] == [
        ("i1", "i2", 1), ("i1", "i3", 1), ("i2", "i3", 1), ("i2", "i4", 1), ("i3", "i4", 1)]  # fmt: skip
    assert [p.item_id for p in result.popularity] == ["i1", "i2", "i3", "i4"]
    assert [p.event_id for p in result.popularity] == ["e1", "e2", "e3", "e4"]


def test_a_late_item_in_between_pushes_a_pair_apart():
    spec = StateSpec.from_config(StateConfig(covisit_window=1), dim=DIM)
    user = UserState.new(spec)
    user.fold([ev(1, "click", "i1", 1 * HOUR), ev(3, "click", "i3", 3 * HOUR)], ITEMS)
    late = user.fold([ev(2, "click", "i2", 2 * HOUR)], ITEMS)
    assert sorted((a, b, d) for a, b, d, _ in late.covisits) == [("i1", "i2", 1), ("i1", "i3", -1), ("i2", "i3", 1)]


def covisit_counts(batches) -> dict:
    from features.core.signals import CoVisitation

    counts = CoVisitation(top_m=1000)
    user = UserState.new(StateSpec.from_config(StateConfig(covisit_window=3, history_size=1000), dim=DIM))
    for batch in batches:
        counts.add(user.fold(batch, ITEMS).covisits)
    return {a: {b: c for b, c in row.items() if c} for a, row in counts.counts.items() if any(row.values())}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 500), st.sampled_from(sorted(ITEMS)), st.sampled_from(["view", "click", "skip"])),
                min_size=1, max_size=25), st.randoms(use_true_random=False), st.integers(1, 6))
def test_covisitation_counts_do_not_depend_on_arrival_order_or_batching(raw, rnd, batch):
    events = [ev(n, kind, item, minute * 60_000) for n, (minute, item, kind) in enumerate(raw)]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    in_order = covisit_counts([sorted(events, key=lambda e: e.ts_ms)])
    arrived = covisit_counts([shuffled[i : i + batch] for i in range(0, len(shuffled), batch)])
    assert arrived == in_order


def test_interest_clock_counts_hours_of_day():
    user = UserState.new(SPEC)
    user.fold([ev(1, "view", "i1", 9 * HOUR), ev(2, "view", "i2", 9 * HOUR + 5), ev(3, "view", "i3", 21 * HOUR)], ITEMS)
    clock = user.interest_clock(21 * HOUR)
    assert clock.argmax() == 9 and clock.sum() == pytest.approx(1.0)
    # the two 9 o'clock views are 12 hours older than the 21 o'clock one: decayed, they still count more
    assert clock[9] / clock[21] == pytest.approx(np.exp(-12 * 3600 / SPEC.long_tau) + np.exp(-(12 * 3600 - 0.005) / SPEC.long_tau), rel=1e-9)
    assert user.event_counts(21 * HOUR) == {"view": pytest.approx(clock[9] / clock[21] + 1.0)}


event_strategy = st.builds(
    lambda n, t, kind, item: (n, t, kind, item),
    st.integers(0, 10_000),
    st.integers(0, 40 * 24) .map(lambda h: h * HOUR),
    st.sampled_from(["view", "click", "cart", "purchase", "like", "dislike", "skip"]),
    st.sampled_from(sorted(ITEMS)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(event_strategy, min_size=1, max_size=30, unique_by=lambda e: e[0]), st.randoms(use_true_random=False))
def test_embeddings_and_preferences_do_not_depend_on_arrival_order(raw, rnd):
    events = [ev(n, kind, item, t) for n, t, kind, item in raw]
    shuffled = list(events)
    rnd.shuffle(shuffled)
    a, b = UserState.new(SPEC), UserState.new(SPEC)
    a.fold(events, ITEMS)
    for chunk in range(0, len(shuffled), 7):
        b.fold(shuffled[chunk : chunk + 7], ITEMS)
    now = max(e.ts_ms for e in events)
    for h in SPEC.horizon_names:
        np.testing.assert_allclose(a.embeddings(now)[h], b.embeddings(now)[h], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.negative_embedding(now), b.negative_embedding(now), rtol=1e-5, atol=1e-6)
    pa, pb = a.attribute_preferences(now), b.attribute_preferences(now)
    assert pa.keys() == pb.keys() and all(pa[k] == pytest.approx(pb[k], rel=1e-5, abs=1e-9) for k in pa)
    assert a.history == b.history


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(event_strategy, min_size=0, max_size=6, unique_by=lambda e: e[0]), min_size=1, max_size=6),
       st.integers(0, 3))
def test_folding_users_together_equals_folding_each_alone(per_user, history_batches):
    """The consumer folds a partition's users in one call (their vector sums updated together)."""
    def state_after_history(u: int) -> UserState:
        user = UserState.new(SPEC)
        for b in range(history_batches):
            user.fold([ev(1000 * u + 100 * b + k, "view", f"i{(u + k) % 12}", (b * 5 + k) * HOUR) for k in range(3)], ITEMS)
        return user

    batches = [[ev(20_000 + 100 * u + n, kind, item, t) for n, t, kind, item in raw] for u, raw in enumerate(per_user)]
    alone, together = [state_after_history(u) for u in range(len(batches))], [state_after_history(u) for u in range(len(batches))]
    expected = [user.fold(batch, ITEMS) for user, batch in zip(alone, batches)]
    got = fold_users(list(zip(together, batches)), ITEMS)
    for a, b, ra, rb in zip(alone, together, expected, got):
        assert (ra.applied, ra.popularity, ra.covisits) == (rb.applied, rb.popularity, rb.covisits)
        assert (a.positive.t_ref, a.history, a.activity.values) == (b.positive.t_ref, b.history, b.activity.values)
        for part in ("positive", "negative", "text"):
            np.testing.assert_allclose(getattr(a, part).sums, getattr(b, part).sums, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(getattr(a, part).weights, getattr(b, part).weights, rtol=1e-12, atol=1e-12)


def test_a_user_cannot_be_folded_twice_in_one_call():
    user = UserState.new(SPEC)
    with pytest.raises(ValueError, match="once"):
        fold_users([(user, [ev(1, "view", "i1", HOUR)]), (user, [ev(2, "view", "i2", HOUR)])], ITEMS)


#: A state written by format 1 (24-d clock and type counts apart): view i1 and click i2 at 09:00 and 09:01, purchase
#: i3 at 06:00 the next day, skip i0 at 02:00 on the first (dim 6, default horizons), and what format 1 read from it
#: at 40 h. Made with the format-1 code of commit 94e3631.
FORMAT_1_STATE = bytes.fromhex(
    "9e010692cb40ac200000000000cb4143c6800000000094c4306b9e82410490a3c10d115640595991c0a6c167c081c5dcbff3"
    "3d8841634da5c1d0403740ffce28c10111413f466e6e3f92cb402000000013c251cb4025d3debb9ae235cb40fa5e00000000"
    "00a2663494c40c06303ab02039b72e49b8c93591cb3ff0000000000000cb40bc200000000000a2663294c40090c0a2663294"
    "c46000000000000000004c3c763f0000000000000000000000000000803f0000000000000000e0a4f83f0000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000091cb"
    "400f3c3068f45383cb40fa5e0000000000a266349393ab63617465676f72793d6331ab63617465676f72793d6332ab636174"
    "65676f72793d633093cb3fefffcf749390dbcb4000000000000000cb401cfc2ffcfebbbacb40dfb300000000009394a47669"
    "6577a5636c69636ba4736b6970a8707572636861736594cb3fefffcf749390dbcb3ff0000000000000cb3fefb08dbd6cac0d"
    "cb3ff07920da56289ecb40dfb30000000000909493ce006ddd00a26930a4736b697093ce01ee6280a26931a47669657793ce"
    "01ef4ce0a26932a5636c69636b93ce066ff300a26933a87075726368617365c42011b5e1d53ae82b141b5d5e51f54f0f04fe"
    "d135082f0eff78f76c4febcbb745d98004"
)
FORMAT_1_READS = {"counts": {"purchase": 0.9862071167439161, "click": 0.9578803471453656, "view": 0.9578581742458134,
                             "skip": 0.9485907870147083},
                  "clock": {2: 0.2463528927603389, 6: 0.2561220068722109, 9: 0.4975251003674503}}


def test_states_written_by_format_1_read_the_same():
    user = decode_state(FORMAT_1_STATE, SPEC)
    counts = user.event_counts(40 * HOUR)
    assert counts.keys() == FORMAT_1_READS["counts"].keys()
    assert all(counts[k] == pytest.approx(v, rel=1e-6) for k, v in FORMAT_1_READS["counts"].items())
    clock = user.interest_clock(40 * HOUR)
    assert {h: pytest.approx(v, rel=1e-6) for h, v in FORMAT_1_READS["clock"].items()} == {h: clock[h] for h in np.flatnonzero(clock)}
    assert [h.item_id for h in user.history] == ["i0", "i1", "i2", "i3"] and user.positive.t_ref == 30 * 3600.0
    again = decode_state(encode_state(user), SPEC)  # written back in the current format
    assert again.activity.values == user.activity.values and again.history == user.history


#: A format-2 state written when the stored preferences were the shown list itself (a newest-wins fold, commit
#: 166cf1e): dim 2, default horizons, preference events p1..p5 at hours 1..5 — "I am allergic to nuts", "I am
#: vegetarian", "I live in Paris", "I am vegan", "I live in Berlin" — of which that code kept the three below.
SHOWN_LIST_STATE = bytes.fromhex(
    "9d020292cb40ac200000000000cb4143c6800000000094c40090c0a2663494c40090c0a2663294c40090c0a266329280c092"
    "86aa707265666572656e6365cb4013f1ceaf424842a7686f75723d3031cb3fefd29d758bb79aa7686f75723d3032cb3fefdd"
    "f00bbd0daca7686f75723d3033cb3fefe946a9417ee1a7686f75723d3034cb3feff4a14f87fde9a7686f75723d3035cb3ff0"
    "000000000000cb40d19400000000009393b54920616d20616c6c657267696320746f206e757473ce0036ee80a2703193aa49"
    "20616d20766567616ece00dbba00a2703493b049206c69766520696e204265726c696ece0112a880a2703590c428e81665c9"
    "7894ce914cc3c1272431dd448d0b97e150d582df8519cc393ba02e329521a04d068b59828005"
)


def test_states_that_stored_the_shown_preferences_read_the_same_and_keep_folding():
    spec = StateSpec.from_config(StateConfig(), dim=2)
    user = decode_state(SHOWN_LIST_STATE, spec)
    assert [(p.text, p.ts_ms // HOUR, p.event_id) for p in user.preferences] == [
        ("I am allergic to nuts", 1, "p1"), ("I am vegan", 4, "p4"), ("I live in Berlin", 5, "p5")]
    assert user.statements == user.preferences and user.events_applied == 5
    late = ev(6, "preference", None, 2 * HOUR, text="I live in Rome")  # older than Berlin: hidden
    newer = ev(7, "preference", None, 6 * HOUR, text="I am not vegan anymore")
    user.fold([late, newer], {})
    assert [p.text for p in user.preferences] == ["I am allergic to nuts", "I live in Berlin", "I am not vegan anymore"]
    again = decode_state(encode_state(user), spec)  # written back: the kept statements, replaced ones too
    assert again.statements == user.statements and again.preferences == user.preferences
    assert [p.text for p in again.statements] == ["I am allergic to nuts", "I live in Rome", "I am vegan",
                                                  "I live in Berlin", "I am not vegan anymore"]


def test_state_round_trips_through_its_binary_form():
    user = UserState.new(SPEC)
    user.fold([ev(1, "purchase", "i1", HOUR), ev(2, "skip", "i2", 2 * HOUR),
               ev(3, "preference", None, 3 * HOUR, text="I am vegan")], ITEMS,
              text_vectors={"I am vegan": np.ones(DIM, np.float32)})  # fmt: skip
    user.mark_offset(3, 41)
    back = decode_state(encode_state(user), SPEC)
    np.testing.assert_allclose(back.positive.sums, user.positive.sums, rtol=1e-6)
    np.testing.assert_allclose(back.negative.sums, user.negative.sums, rtol=1e-3)  # float16
    np.testing.assert_allclose(back.text.sums, user.text.sums, rtol=1e-3)
    assert back.history == user.history and back.preferences == user.preferences
    assert back.recent_ids == user.recent_ids and back.offsets == {3: 41}
    assert back.attribute_preferences(3 * HOUR) == user.attribute_preferences(3 * HOUR)
    assert encode_state(back) == encode_state(decode_state(encode_state(back), SPEC))


def test_encoded_state_is_exactly_the_record_struct_encoded():
    # encode_state writes tuples for speed; they must give the bytes of the documented struct
    from features.core.state_codec import _decoder

    user = UserState.new(SPEC)
    user.fold([ev(1, "purchase", "i1", HOUR), ev(2, "rating", "i2", 2 * HOUR, value=1.0)], ITEMS)
    blob = encode_state(user)
    assert msgspec.msgpack.encode(_decoder.decode(blob)) == blob
    assert msgspec.msgpack.encode(_decoder.decode(encode_state(UserState.new(SPEC)))) == encode_state(UserState.new(SPEC))


def test_decoding_with_other_horizons_is_an_error_not_garbage():
    blob = encode_state(UserState.new(SPEC))
    other = StateSpec.from_config(StateConfig(horizons={"day": 86400.0}), dim=DIM)
    with pytest.raises(StateFormatError, match="horizons"):
        decode_state(blob, other)
    with pytest.raises(StateFormatError, match="not readable"):
        decode_state(b"\x00garbage", SPEC)


def test_fold_does_not_mutate_its_inputs():
    events = [ev(1, "click", "i1", HOUR)]
    vector_before = ITEMS["i1"].vector.copy()
    UserState.new(SPEC).fold(events, ITEMS)
    assert events == [ev(1, "click", "i1", HOUR)]
    np.testing.assert_array_equal(ITEMS["i1"].vector, vector_before)
