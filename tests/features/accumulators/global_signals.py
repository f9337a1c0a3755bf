"""Contracts of a tenant's global signals: popularity (forward decay) and co-visitation (Space-Saving rows)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from features.core.signals import CoVisitation, Popularity
from tests.features.accumulators.harness import DAY_MS, HOUR_S, ITEMS, Contract

# --- popularity (forward decay) ---------------------------------------------------------------------------------
_popularity_obs = st.lists(
    st.tuples(st.sampled_from(ITEMS), st.integers(0, 40 * DAY_MS), st.floats(0.1, 8.0)), min_size=1, max_size=30,
)
#: Short enough that 40 days pass the rescaling exponent (60 time constants) many times over.
_POPULARITY_TAU_S = 3 * HOUR_S


def _popularity_read(state: Popularity, observations: list) -> Any:
    now_ms = max(o[1] for o in observations) + 60_000
    return dict(zip(ITEMS, state.read(ITEMS, now_ms)))


def _popularity_bounds(state: Popularity, observations: list) -> None:
    scores = list(state.scores.values())
    assert all(np.isfinite(s) and s >= 0 for s in scores)
    # forward decay rescales before an increment's exponent passes RESCALE_EXPONENT: stored numbers stay far
    # from overflow however long the stream
    assert max(scores) <= sum(o[2] for o in observations) * np.exp(60.0)


POPULARITY = Contract(
    name="popularity (forward decay)", observations=_popularity_obs,
    new=lambda bounded: Popularity(_POPULARITY_TAU_S),
    fold=lambda state, batch: [state.add(item, ts, w) for item, ts, w in batch] and None,
    read=_popularity_read, check_bounds=_popularity_bounds, replay="additive", order_when_bounded=True,
    rel=1e-6,
)  # fmt: skip


# --- co-visitation (Space-Saving rows) --------------------------------------------------------------------------
_covisit_obs = st.lists(st.tuples(st.sampled_from(ITEMS), st.sampled_from(ITEMS)).filter(lambda p: p[0] != p[1]),
                        min_size=1, max_size=40)


def _covisit_read(state: CoVisitation, observations: list) -> Any:
    return {"rows": {item: {m: float(c) for m, c in state.neighbours(item).items()} for item in ITEMS},
            "cosine": state.cosine_matrix(ITEMS, ITEMS)}


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


COVISITATION = Contract(
    name="co-visitation (Space-Saving)", observations=_covisit_obs,
    new=lambda bounded: CoVisitation(top_m=2 if bounded else len(ITEMS)),
    fold=lambda state, batch: state.add(batch), read=_covisit_read, check_bounds=_covisit_bounds, replay="additive",
)  # fmt: skip
