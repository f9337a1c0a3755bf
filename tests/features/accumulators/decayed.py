"""Contracts of the decayed sums: dense (one per horizon, and all horizons at once) and sparse (attribute
preferences and activity counts)."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from features.core.decay import DecayedSum, SparseDecayedSum
from tests.features.accumulators.harness import DIM, Contract, now_s

# --- decayed sums (one contract per horizon, and all horizons at once) ------------------------------------------
_decayed_obs = st.lists(
    st.tuples(st.floats(0, 10 * 86400, allow_nan=False), st.floats(0.1, 8.0),
              st.lists(st.floats(-1, 1, allow_nan=False), min_size=DIM, max_size=DIM)),
    min_size=1, max_size=30,
)  # fmt: skip


def decayed(name: str, taus: list[float]) -> Contract:
    def fold(state: DecayedSum, batch: list) -> None:
        if batch:
            state.update_many([o[0] for o in batch], [o[1] for o in batch], [o[2] for o in batch])

    def read(state: DecayedSum, observations: list) -> Any:
        sums, weights = state.read(now_s(observations, lambda o: o[0]))
        return {"sums": sums.astype(np.float64), "weights": weights}

    def bounds(state: DecayedSum, observations: list) -> None:
        sums, weights = state.read(now_s(observations, lambda o: o[0]))
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
    now = now_s(observations, lambda o: o[0])
    kept, truth = state.read(now), exact.read(now)
    for key, value in kept.items():
        assert 0 < value <= truth[key] * (1 + 1e-9)  # positive amounts: a kept key never overshoots its sum


SPARSE = Contract(
    name="attribute / activity sums (sparse decayed)", observations=_sparse_obs,
    new=lambda bounded: SparseDecayedSum(_SPARSE_TAU, 2 if bounded else len(_KEYS)),
    fold=lambda state, batch: state.add_many([(t, tuple(keys), amount) for t, keys, amount in batch]),
    read=lambda state, observations: state.read(now_s(observations, lambda o: o[0])),
    check_bounds=_sparse_bounds, replay="additive",
)  # fmt: skip
