"""Property tests of the decay math: order independence, merge, exact lateness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.core.decay import DecayedSum, SparseDecayedSum

TAUS = [3600.0, 30 * 86400.0]
DIM = 4

event = st.tuples(
    st.floats(min_value=0, max_value=60 * 86400, allow_nan=False),  # time, s
    st.floats(min_value=0.1, max_value=10, allow_nan=False),  # weight
    st.lists(st.floats(min_value=-1, max_value=1, allow_nan=False), min_size=DIM, max_size=DIM),
)
events = st.lists(event, min_size=1, max_size=40)


def fold(evts, one_by_one=True) -> DecayedSum:
    state = DecayedSum(TAUS, DIM)
    if one_by_one:
        for t, w, x in evts:
            state.update(t, w, x)
    else:
        state.update_many(np.array([e[0] for e in evts]), np.array([e[1] for e in evts]),
                          np.array([e[2] for e in evts]))  # fmt: skip
    return state


def assert_same(a: DecayedSum, b: DecayedSum, now: float) -> None:
    sa, wa = a.read(now)
    sb, wb = b.read(now)
    scale = max(1e-12, float(np.abs(sa).max(initial=0)), float(wa.max(initial=0)))
    np.testing.assert_allclose(sa, sb, rtol=1e-5, atol=1e-5 * scale)
    np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-5 * scale)


@settings(max_examples=200, deadline=None)
@given(events, st.randoms(use_true_random=False))
def test_any_permutation_gives_the_same_state(evts, rnd):
    shuffled = list(evts)
    rnd.shuffle(shuffled)
    now = max(e[0] for e in evts) + 10.0
    assert_same(fold(evts), fold(shuffled), now)


@settings(max_examples=200, deadline=None)
@given(events)
def test_batch_fold_equals_one_by_one(evts):
    now = max(e[0] for e in evts)
    assert_same(fold(evts), fold(evts, one_by_one=False), now)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0, max_value=60 * 86400, allow_nan=False),
                          st.integers(min_value=0, max_value=DIM - 1)), min_size=1, max_size=40))  # fmt: skip
def test_one_hot_updates_equal_the_vector_fold(evts):
    one_hot = DecayedSum(TAUS, DIM)
    one_hot.update_one_hot([t for t, _ in evts], [i for _, i in evts])
    dense = fold([(t, 1.0, np.eye(DIM)[i]) for t, i in evts], one_by_one=False)
    assert one_hot.t_ref == dense.t_ref
    assert_same(one_hot, dense, max(t for t, _ in evts) + 1.0)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(min_value=0, max_value=40), st.randoms(use_true_random=False))
def test_split_and_merge_gives_the_same_state(evts, cut, rnd):
    shuffled = list(evts)
    rnd.shuffle(shuffled)
    left, right = fold(shuffled[:cut]), fold(shuffled[cut:])
    now = max(e[0] for e in evts) + 5.0
    assert_same(left.merge(right), fold(evts), now)
    assert_same(right.merge(left), fold(evts), now)


@given(st.floats(min_value=0, max_value=10 * 86400), st.floats(min_value=0.5, max_value=5))
def test_late_event_is_weighted_exactly_by_its_age(age, weight):
    state = DecayedSum(TAUS, 2)
    state.update(1_000_000.0, 1.0, [1.0, 0.0])
    state.update(1_000_000.0 - age, weight, [0.0, 1.0])
    sums, _ = state.read(1_000_000.0)
    for h, tau in enumerate(TAUS):
        assert sums[h, 1] == pytest.approx(weight * math.exp(-age / tau), rel=1e-6)  # float32 sums
        assert sums[h, 0] == pytest.approx(1.0)


def test_empty_is_explicit_not_zero():
    state = DecayedSum(TAUS, 2)
    assert state.empty
    state.update(10.0, 0.0, [0.0, 0.0])  # a real observation whose value is zero
    assert not state.empty
    assert state.read(10.0)[0].tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_reading_before_t_ref_does_not_amplify():
    state = DecayedSum(TAUS, 1)
    state.update(100.0, 1.0, [1.0])
    assert state.read(50.0)[0][:, 0].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("taus", [[], [0.0], [-1.0], [float("inf")]])
def test_invalid_taus_are_rejected(taus):
    with pytest.raises(ValueError, match="tau"):
        DecayedSum(taus, 3)


def test_merge_requires_same_shape():
    with pytest.raises(ValueError, match="same taus"):
        DecayedSum([1.0], 2).merge(DecayedSum([2.0], 2))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 86400), st.sampled_from("abc"), st.floats(0.1, 5)), min_size=1, max_size=30),
       st.randoms(use_true_random=False))
def test_sparse_sum_is_order_independent_when_unbounded(items, rnd):
    def run(seq):
        s = SparseDecayedSum(tau=3600.0, max_keys=10)
        for t, key, amount in seq:
            s.add(t, {key: amount})
        return s.read(now=86400.0)

    shuffled = list(items)
    rnd.shuffle(shuffled)
    a, b = run(items), run(shuffled)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-12)
