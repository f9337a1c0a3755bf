"""Score candidate items for a user: a few interpretable features, blended by weights.

Features per candidate (all numpy, one pass):

=============  ==============================================================
``sim_<h>``     cosine of the item vector with the user's horizon-``h`` embedding
``neg_sim``     cosine with the negative (dislike/skip) embedding
``text_sim``    cosine with the embedding of the user's messages/preferences
``attribute``   the user's decayed preference for the item's attribute values
``popularity``  log popularity, scaled to [0, 1] over the candidates
``covisit``     cosine co-visitation with the user's latest items, ``Σ r^age·cos(a, x)`` over the
                anchors (``r`` = ``scoring.covisit_recency``), scaled by its maximum to [0, 1]
``seen``        1 if the item is in the user's recent history
=============  ==============================================================

Unknown users get the non-personalized features only (popularity, and nothing
else is non-zero); candidates without a vector get zero similarity.

>>> import numpy as np
>>> cands = Candidates(item_ids=["a", "b"], vectors=np.array([[1, 0], [0, 1]], np.float32),
...                    attribute_keys=[[], []], popularity=np.array([1.0, 5.0]))
>>> view = UserView(embeddings={"long": np.array([1, 0], np.float32)})
>>> scored = score(view, cands, {"sim_long": 1.0, "popularity": 0.1})
>>> [round(float(s), 3) for s in scored.scores]
[1.039, 0.1]
>>> [round(float(s), 3) for s in score(None, cands, {"sim_long": 1.0, "popularity": 0.1}).scores]
[0.039, 0.1]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["UserView", "Candidates", "Scored", "score", "rank"]

COVISIT_RECENCY = 0.97  # default weight of the anchor one step further back in history (scoring.covisit_recency)


@dataclass
class UserView:
    """What the scorer needs of a user, read out at request time."""

    embeddings: Mapping[str, np.ndarray] = field(default_factory=dict)  # horizon -> unit vector
    negative: np.ndarray | None = None
    text: np.ndarray | None = None
    attributes: Mapping[str, float] = field(default_factory=dict)
    recent_items: Sequence[str] = ()  # newest last
    seen: frozenset[str] = frozenset()


@dataclass
class Candidates:
    """Candidate items with what is known of them (rows aligned with ``item_ids``)."""

    item_ids: Sequence[str]
    vectors: np.ndarray  # (n, d) float32, zero rows for items without a vector
    attribute_keys: Sequence[Sequence[str]]
    popularity: np.ndarray  # (n,)
    #: (anchors, n) cosine co-visitation (features.core.signals.cosine), anchors newest last
    covisit: np.ndarray | None = None
    #: the attribute keys as numbers (n, w), 0 after an item's last (features.core.signal_cache.SignalTable.candidates),
    #: with ``key_numbers`` (key -> number): when given, used instead of ``attribute_keys``
    key_index: np.ndarray | None = None
    key_numbers: Mapping[str, int] | None = None


@dataclass
class Scored:
    scores: np.ndarray
    features: dict[str, np.ndarray]


def _scaled_log(values: np.ndarray) -> np.ndarray:
    logged = np.log1p(np.maximum(values, 0.0))
    top = float(logged.max(initial=0.0))
    return logged / top if top > 0 else logged


def _by_max(values: np.ndarray) -> np.ndarray:
    top = float(values.max(initial=0.0))
    return values / top if top > 0 else values


def _attribute(prefs: Mapping[str, float], cands: Candidates) -> np.ndarray:
    """Each candidate's ``Σ prefs[key] / Σ|prefs|`` over its attribute keys, summed left to right as Python's
    ``sum`` does (so both ways give the same bits): column by column over ``key_index`` when given."""
    total = sum(abs(v) for v in prefs.values()) or 1.0
    if cands.key_index is None or cands.key_numbers is None:
        zero = itertools.repeat(0.0)  # map(prefs.get, keys, zero): the same sums, in the same order, ~2x faster
        return np.array([sum(map(prefs.get, keys, zero)) / total for keys in cands.attribute_keys], dtype=np.float64)
    numbers = cands.key_numbers
    values = np.zeros(len(numbers) + 1, dtype=np.float64)  # by key number; 0: no key
    for key, value in prefs.items():
        at = numbers.get(key)
        if at is not None:
            values[at] = value
    sums = np.zeros(cands.key_index.shape[0], dtype=np.float64)
    for column in cands.key_index.T:  # adding 0.0 for the padding leaves a sum as it was
        sums += values[column]
    return sums / total


def score(user: UserView | None, cands: Candidates, weights: Mapping[str, float], *,
          covisit_recency: float = COVISIT_RECENCY) -> Scored:  # fmt: skip
    """Scores (higher is better) and the feature values that produced them."""
    n = len(cands.item_ids)
    features: dict[str, np.ndarray] = {"popularity": _scaled_log(np.asarray(cands.popularity, dtype=np.float64))}
    if user is not None:
        vectors = cands.vectors
        for name, embedding in user.embeddings.items():
            features[f"sim_{name}"] = (vectors @ embedding).astype(np.float64)
        if user.negative is not None:
            features["neg_sim"] = (vectors @ user.negative).astype(np.float64)
        if user.text is not None:
            features["text_sim"] = (vectors @ user.text).astype(np.float64)
        if user.attributes:
            features["attribute"] = _attribute(user.attributes, cands)
        if cands.covisit is not None and cands.covisit.size:
            anchors = cands.covisit.shape[0]
            recency = covisit_recency ** np.arange(anchors - 1, -1, -1, dtype=np.float64)
            features["covisit"] = _by_max(recency @ cands.covisit)
        if user.seen:
            features["seen"] = np.fromiter(map(user.seen.__contains__, cands.item_ids), dtype=bool, count=n) * 1.0
    scores = np.zeros(n, dtype=np.float64)
    for name, values in features.items():
        weight = weights.get(name, 0.0)
        if weight:
            scores += weight * values
    return Scored(scores=scores, features=features)


def rank(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Indices by descending score; ties keep candidate order (stable).

    >>> rank(np.array([0.1, 0.5, 0.5, 0.2])).tolist()
    [1, 2, 3, 0]
    """
    order = np.argsort(-scores, kind="stable")
    return order if k is None else order[:k]
