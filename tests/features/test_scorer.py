"""The scorer: features as documented, blend by weights, non-personalized fallback."""

from __future__ import annotations

import numpy as np
import pytest

from features.core.scorer import Candidates, UserView, rank, score

E1, E2 = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)


def cands(**overrides) -> Candidates:
    base = dict(item_ids=["a", "b", "c"], vectors=np.array([E1, E2, [0, 0]], np.float32),
                attribute_keys=[["category=jazz"], ["category=rock"], []], popularity=np.array([0.0, 10.0, 100.0]))  # fmt: skip
    base.update(overrides)
    return Candidates(**base)


def test_each_feature_is_computed_as_documented():
    view = UserView(embeddings={"long": E1, "session": E2}, negative=E2, text=E1,
                    attributes={"category=jazz": 3.0, "category=rock": -1.0}, recent_items=["x", "y"], seen=frozenset({"b"}))  # fmt: skip
    covisit = np.array([[0.0, 4.0, 0.0], [1.0, 0.0, 0.0]])  # anchors x (older), y (newest)
    scored = score(view, cands(covisit=covisit), {})
    f = scored.features
    assert f["sim_long"].tolist() == [1.0, 0.0, 0.0] and f["sim_session"].tolist() == [0.0, 1.0, 0.0]
    assert f["neg_sim"].tolist() == [0.0, 1.0, 0.0] and f["text_sim"].tolist() == [1.0, 0.0, 0.0]
    assert f["attribute"].tolist() == pytest.approx([0.75, -0.25, 0.0])
    assert f["popularity"].tolist() == pytest.approx(np.log1p([0, 10, 100]) / np.log1p(100))
    raw = np.array([1.0, 0.97 * 4.0, 0.0])  # the newest anchor counts fully, the one before 0.97 (covisit_recency)
    assert f["covisit"].tolist() == pytest.approx(raw / raw.max())  # scaled by the maximum
    half = score(view, cands(covisit=covisit), {}, covisit_recency=0.5).features["covisit"]
    assert half.tolist() == pytest.approx([1.0 / 2.0, 1.0, 0.0])
    assert f["seen"].tolist() == [0.0, 1.0, 0.0]
    assert scored.scores.tolist() == [0.0, 0.0, 0.0]  # no weights, no score


def test_blend_is_the_weighted_sum_of_features():
    view = UserView(embeddings={"long": E1}, attributes={"category=jazz": 1.0})
    weights = {"sim_long": 2.0, "attribute": 0.5, "popularity": 0.1}
    scored = score(view, cands(), weights)
    expected = sum(w * scored.features[name] for name, w in weights.items())
    np.testing.assert_allclose(scored.scores, expected)
    assert rank(scored.scores).tolist()[0] == 0


def test_unknown_user_gets_popularity_order():
    scored = score(None, cands(), {"sim_long": 1.0, "popularity": 1.0, "covisit": 1.0})
    assert set(scored.features) == {"popularity"}
    assert rank(scored.scores).tolist() == [2, 1, 0]


def test_candidates_without_vectors_get_zero_similarity():
    scored = score(UserView(embeddings={"long": E1}), cands(), {"sim_long": 1.0})
    assert scored.features["sim_long"][2] == 0.0


def test_rank_is_stable_and_truncates():
    assert rank(np.array([1.0, 3.0, 3.0, 2.0]), k=3).tolist() == [1, 2, 3]


def test_attribute_sums_by_key_numbers_have_the_bits_of_the_python_sums():
    """The held table's column-by-column sums equal Python's left-to-right ``sum`` exactly (byte-identical answers)."""
    rng = np.random.default_rng(3)
    vocabulary = [f"genre={n}" for n in range(40)]
    numbers = {key: n + 1 for n, key in enumerate(vocabulary)}
    keys = [list(rng.choice(vocabulary, size=int(rng.integers(0, 9)))) for _ in range(300)]
    index = np.zeros((300, 8), dtype=np.int32)
    for row, item_keys in enumerate(keys):
        index[row, : len(item_keys)] = [numbers[k] for k in item_keys]
    prefs = {key: float(v) for key, v in zip(vocabulary[:30], rng.normal(size=30) * 1e-3)} | {"unheld=1": 0.5}
    view = UserView(attributes=prefs)
    base = dict(item_ids=[str(n) for n in range(300)], vectors=np.zeros((300, 2), np.float32), attribute_keys=keys,
                popularity=np.zeros(300))  # fmt: skip
    by_lists = score(view, Candidates(**base), {"attribute": 1.0}).features["attribute"]
    by_numbers = score(view, Candidates(**base, key_index=index, key_numbers=numbers), {"attribute": 1.0})
    assert by_lists.tobytes() == by_numbers.features["attribute"].tobytes()
