"""Co-visitation rows are bounded heavy-hitter summaries (Space-Saving), normalised by cosine."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from features.core.signals import CoVisitation, cosine, space_saving_add


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=300), st.integers(1, 8))
def test_space_saving_rows_are_bounded_and_keep_every_heavy_hitter(stream, top_m):
    row: dict[str, float] = {}
    for x in stream:
        space_saving_add(row, f"m{x:02d}", 1.0, top_m)
    true = Counter(f"m{x:02d}" for x in stream)
    total = len(stream)
    assert len(row) <= top_m
    assert sum(row.values()) == total  # Space-Saving keeps the stream's total mass
    low = min(row.values())
    for member, count in row.items():
        assert true[member] <= count <= true[member] + low  # over-estimates by at most the row's minimum
    for member, count in true.items():
        if count > total / top_m:
            assert member in row, (member, count, total, top_m)  # a heavy hitter is never lost


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 20), st.sampled_from([1.0, 1.0, 2.0, -1.0])),
                min_size=1, max_size=200), st.integers(1, 5), st.integers(1, 7))  # fmt: skip
def test_the_heap_finds_the_same_weakest_member_as_a_scan(pairs, top_m, batch):
    fast = CoVisitation(top_m)
    plain: dict[str, dict[str, float]] = {}
    for start in range(0, len(pairs), batch):
        chunk = [(a, f"x{b:02d}", d) for a, b, d in pairs[start : start + batch]]
        fast.add(chunk)
        sums: dict[tuple[str, str], float] = {}
        for a, b, d in chunk:
            sums[(a, b)] = sums.get((a, b), 0.0) + d
        for (a, b), d in sums.items():
            if d:
                space_saving_add(plain.setdefault(a, {}), b, d, top_m)
                space_saving_add(plain.setdefault(b, {}), a, d, top_m)
    assert fast.counts == plain
    assert all(len(row) <= top_m for row in fast.counts.values())


def test_runs_count_occurrences_and_the_cosine_divides_by_them():
    cv = CoVisitation(top_m=10)
    cv.add_runs([("a", (), 1.0, "e1", 1.0), ("b", ("a",), 1.0, "e2", 1.0), ("c", ("a", "b"), 1.0, "e3", 1.0),
                 ("a", (), 0.0, "e4", 1.0)])  # fmt: skip
    assert cv.occurrences(["a", "b", "c", "z"]).tolist() == [2.0, 1.0, 1.0, 0.0]
    assert cv.matrix(["a"], ["b", "c", "z"]).tolist() == [[1.0, 1.0, 0.0]]
    np.testing.assert_allclose(cv.cosine_matrix(["a"], ["b", "c", "z"]), [[1 / np.sqrt(2), 1 / np.sqrt(2), 0.0]])
    assert cosine(np.zeros((1, 2)), np.zeros(1), np.zeros(2)).tolist() == [[0.0, 0.0]]


def test_a_count_inherited_in_a_full_row_is_capped_by_the_items_occurrences():
    cv = CoVisitation(top_m=1)
    cv.add_runs([("a", (), 0.0, "ea", 3.0)] + [("b", ("a",), 1.0, f"e{i}", 1.0) for i in range(3)])
    cv.add_runs([("c", ("a",), 1.0, "ec", 1.0)])  # c takes b's place in a's full row and inherits its 3
    assert cv.matrix(["a"], ["c"]).tolist() == [[4.0]]
    # c occurred once: the pair cannot have been seen more often; uncapped it was 4 / sqrt(3·1) > 1
    np.testing.assert_allclose(cv.cosine_matrix(["a"], ["c"]), [[1 / np.sqrt(3)]])
