"""The request path's co-visitation table gives the same cosine matrix as the in-memory CoVisitation."""

from __future__ import annotations

import numpy as np
import pytest

from features.core.signal_cache import SignalTable
from features.core.signals import CoVisitation


def _filled(memory: CoVisitation, clock) -> SignalTable:
    table = SignalTable(ttl_s=30, clock=clock)
    for item, row in memory.counts.items():
        table.put_row(item, list(row), list(row.values()))
    items = sorted(set(memory.counts) | set(memory.n))
    table.put_counts(items, [memory.n.get(i) for i in items])
    return table


def test_the_matrix_equals_the_dict_rows_for_random_histories():
    rng = np.random.default_rng(0)
    memory = CoVisitation(top_m=8)
    items = [f"i{n}" for n in range(60)]
    for _ in range(40):
        history = list(rng.choice(items, size=12))
        memory.add_runs([(later, tuple(history[max(0, k - 3):k]), 1.0, "", 1.0) for k, later in enumerate(history)])
    table = _filled(memory, lambda: 0.0)
    anchors = list(rng.choice(items, size=10, replace=False)) + ["never-seen"]
    candidates = list(rng.choice(items, size=40, replace=False)) + ["unknown", anchors[0]]
    np.testing.assert_array_equal(table.counts(anchors, candidates), memory.matrix(anchors, candidates))
    np.testing.assert_allclose(table.cosine(anchors, candidates), memory.cosine_matrix(anchors, candidates))


def test_duplicate_candidates_each_get_their_column():
    table = SignalTable(ttl_s=30, clock=lambda: 0.0)
    table.put_row("a", ["x", "y"], [3.0, 1.0])
    assert table.counts(["a", "b"], ["y", "x", "y"]).tolist() == [[1.0, 3.0, 1.0], [0.0, 0.0, 0.0]]


def test_rows_and_counts_expire_and_the_table_is_bounded():
    now = [0.0]
    table = SignalTable(ttl_s=10, max_items=4, max_rows=2, clock=lambda: now[0])
    table.put_row("a", ["x"], [1.0])
    table.put_row("b", ["x"], [1.0])
    table.put_row("c", ["x"], [1.0])  # over max_rows: the row read first goes
    table.put_counts(["a"], [2.0])
    assert table.stale_rows(["a", "b", "c"]) == ["a"]
    assert table.stale_counts(["a", "b"]) == ["b"]
    now[0] = 10.5
    assert table.stale_rows(["b", "c"]) == ["b", "c"] and table.stale_counts(["a"]) == ["a"]
    assert table.full  # a, b, c, x
    with pytest.raises(ValueError):
        SignalTable(ttl_s=-1)


def test_popularity_is_held_for_its_time_and_dropped_when_the_landmark_moves():
    now = [0.0]
    table = SignalTable(ttl_s=30, popularity_ttl_s=5, clock=lambda: now[0])
    ids = table.ids(["a", "b"])
    assert table.stale_popularity(["a", "b"], ids) == ["a", "b"] and table.popularity(ids, 100.0) is None
    table.put_popularity(["a", "b"], [2.0, None], 100.0)
    assert table.stale_popularity(["a", "b"], ids) == []
    assert table.popularity(ids, 100.0).tolist() == [2.0, 0.0]
    assert table.popularity(ids, 200.0) is None  # read against another landmark: not usable
    table.put_popularity(["a"], [1.0], 200.0)  # a rescale: "b", held against 100.0, is dropped
    assert table.popularity(ids, 200.0) is None and table.stale_popularity(["a", "b"], ids) == ["b"]
    table.put_popularity(["b"], [3.0], 200.0)
    assert table.popularity(ids, 200.0).tolist() == [1.0, 3.0]
    now[0] = 5.5
    assert table.stale_popularity(["a", "b"], ids) == ["a", "b"]


def test_items_are_gathered_as_held_and_expire():
    from features.core.state import ItemInfo

    now = [0.0]
    table = SignalTable(ttl_s=30, item_ttl_s=60, dim=2, clock=lambda: now[0])
    ids = table.ids(["a", "b", "c", "z"])
    assert table.stale_items(["a", "b", "c", "z"], ids) == ["a", "b", "c", "z"]
    found = {"a": ItemInfo(vector=np.array([1.0, 2.0], np.float32), attributes={"genre": ["x", "y"]}),
             "b": ItemInfo(vector=None, attributes={"genre": "y", "year": 1999})}  # fmt: skip
    table.put_items(["a", "b", "c"], found)  # c: not stored, held as such
    vectors, has_vector, keys = table.candidates(table.ids(["b", "a", "c", "z"]))  # z: never read
    assert vectors.tolist() == [[0.0, 0.0], [1.0, 2.0], [0.0, 0.0], [0.0, 0.0]]
    assert has_vector.tolist() == [False, True, False, False]
    names = {n: k for k, n in table.attribute_keys.items()}
    assert [[names[n] for n in row if n] for row in keys.tolist()] == [["genre=y"], ["genre=x", "genre=y"], [], []]
    assert table.stale_items(["a", "b", "c", "z"], ids) == ["z"]
    now[0] = 60.5
    assert table.stale_items(["a", "b", "c"], ids[:3]) == ["a", "b", "c"]
    full = SignalTable(ttl_s=30, item_ttl_s=60, dim=2, max_held=2, clock=lambda: now[0])
    full.put_items(["a", "b"], found)
    assert full.full


def test_jitter_spreads_expiry_and_never_trusts_an_entry_longer():
    now = [0.0]
    table = SignalTable(ttl_s=10, popularity_ttl_s=10, jitter=0.5, clock=lambda: now[0], seed=1)
    items = [f"i{n}" for n in range(200)]
    ids = table.ids(items)
    table.put_counts(items, [1.0] * 200)
    table.put_popularity(items, [1.0] * 200, 0.0)
    now[0] = 7.5  # between (1 - jitter)·ttl and ttl: some, not all, read again
    assert 0 < len(table.stale_counts(items, ids)) < 200 and 0 < len(table.stale_popularity(items, ids)) < 200
    now[0] = 4.9  # before (1 - jitter)·ttl: none
    assert table.stale_counts(items, ids) == [] and table.stale_popularity(items, ids) == []
    now[0] = 10.01  # past ttl: all
    assert len(table.stale_counts(items, ids)) == 200 and len(table.stale_popularity(items, ids)) == 200
