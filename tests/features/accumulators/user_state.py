"""Contract of the whole user state: the consumer's fold of every event type, its bounds and its codec."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from features.core.events import Event
from features.core.state import ItemInfo, StateSpec, UserState
from features.core.state_codec import decode_state, encode_state
from p13n.config import StateConfig
from tests.features.accumulators.harness import DIM, HOUR_MS, ITEMS, Contract
from tests.features.accumulators.lists import STATEMENTS, statement_texts

# --- the whole user state (the consumer's fold) -----------------------------------------------------------------
_USER_ITEMS = {
    item: ItemInfo(vector=np.random.default_rng(n).standard_normal(DIM).astype(np.float32),
                   attributes={"category": f"c{n % 3}", "brand": f"b{n % 2}"}, text=f"item {n}")
    for n, item in enumerate(ITEMS)
}  # fmt: skip
_PREFERENCE_VECTORS = {t: np.random.default_rng(100 + i).standard_normal(DIM).astype(np.float32)
                       for i, t in enumerate(STATEMENTS)}  # fmt: skip
_user_obs = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(0, 40 * 24),
              st.sampled_from(["view", "click", "cart", "purchase", "like", "dislike", "skip", "rating", "preference"]),
              st.sampled_from(ITEMS), st.sampled_from([1.0, 2.0, 3.0, 4.0, 5.0]), statement_texts),
    min_size=1, max_size=30, unique_by=lambda o: o[0],
)  # fmt: skip


def _user_event(n: int, hour: int, kind: str, item: str, value: float, text: str) -> Event:
    if kind == "preference":
        return Event(event_id=f"e{n}", user_id="u", type=kind, ts_ms=hour * HOUR_MS, text=text)
    return Event(event_id=f"e{n}", user_id="u", type=kind, ts_ms=hour * HOUR_MS, item_id=item,
                 value=value if kind == "rating" else None)  # fmt: skip


def _user_spec(bounded: bool) -> StateSpec:
    if bounded:
        config = StateConfig(history_size=3, recent_event_ids=4, max_preferences=2, max_attribute_values=2,
                             covisit_window=2)  # fmt: skip
    else:
        config = StateConfig(history_size=1000, recent_event_ids=1000, max_preferences=100, max_attribute_values=64)
    return StateSpec.from_config(config, dim=DIM)


def _user_read(user: UserState, observations: list) -> Any:
    now_ms = max(o[1] for o in observations) * HOUR_MS + 60_000
    now_s = now_ms / 1000.0
    return {
        "positive": user.positive.read(now_s)[0].astype(np.float64),
        "negative": user.negative.read(now_s)[0].astype(np.float64),
        "text": user.text.read(now_s)[0].astype(np.float64),
        "weights": [user.positive.read(now_s)[1], user.negative.read(now_s)[1], user.text.read(now_s)[1]],
        "attributes": user.attribute_preferences(now_ms),
        "activity": user.activity.read(now_s),
        "preferences": list(user.preferences),
        "history": list(user.history),
        "events_applied": user.events_applied,
    }


def _user_bounds(user: UserState, observations: list) -> None:
    spec = user.spec
    assert len(user.history) <= spec.history_size and user.history == sorted(user.history)
    assert len(user.preferences) <= spec.max_preferences
    assert len(user.attributes.values) <= spec.max_attribute_values
    assert len(user.recent_ids) <= 8 * spec.recent_event_ids
    assert user.events_applied == len(observations)  # distinct event ids, each folded once


USER_STATE = Contract(
    name="user state (the fold)", observations=_user_obs,
    new=lambda bounded: UserState.new(_user_spec(bounded)),
    fold=lambda user, batch: user.fold([_user_event(*o) for o in batch], _USER_ITEMS, _PREFERENCE_VECTORS) and None,
    read=_user_read, check_bounds=_user_bounds, replay="idempotent",
    # the negative and text sums are stored as float16 (features/core/state_codec.py), the horizons' as float32
    codec=lambda user: decode_state(encode_state(user), user.spec), codec_vector_rel=2e-3,
)  # fmt: skip
