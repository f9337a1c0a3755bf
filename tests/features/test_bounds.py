"""Numbers stay finite from decode to stored sums: the bounds of [state] and what they protect."""

from __future__ import annotations

import json

import numpy as np
import pytest

from features.core.events import Event, parse_event
from features.core.state import ItemInfo, StateSpec, UserState
from p13n.config import Config, StateConfig
from p13n.errors import ConfigError

NOW = 1_800_000_000_000
DIM = 4
ITEMS = {"i1": ItemInfo(vector=np.ones(DIM, dtype=np.float32) / 2)}


def rating(value: float, n: int = 0) -> bytes:
    return json.dumps({"event_id": f"r{n}", "user_id": "u", "type": "rating", "item_id": "i1", "value": value,
                       "timestamp": NOW - 1000 + n}).encode()  # fmt: skip


@pytest.mark.parametrize("value", [5.0, 1e6, -1e6, 1e39, 1e300])
def test_whatever_a_rating_says_the_fold_stays_finite(value):
    """Before the bound, 1e39 overflowed the float32 sums (RuntimeWarning: overflow encountered in cast,
    features/core/decay.py) and 1e300 gave `"score": null`; warnings are errors here."""
    user = UserState.new(StateSpec.from_config(StateConfig(), dim=DIM))
    events = [e for e in (parse_event(rating(value, n), now_ms=NOW) for n in range(3)) if isinstance(e, Event)]
    assert len(events) == (3 if abs(value) <= 1e6 else 0)
    user.fold(events, ITEMS)
    for vector in [*user.embeddings(NOW).values(), user.negative_embedding(NOW)]:
        assert np.all(np.isfinite(vector))
    assert np.all(np.isfinite(user.positive.sums)) and np.all(np.isfinite(user.negative.sums))


def test_the_heaviest_event_the_config_allows_folds_without_overflow():
    state = StateConfig(event_weights={"rating": 1e6}, rating_scale=1.0, rating_midpoint=0.0, max_abs_value=1e6)
    user = UserState.new(StateSpec.from_config(state, dim=DIM))
    events = [parse_event(rating(1e6, n), now_ms=NOW, max_abs_value=state.max_abs_value) for n in range(1000)]
    user.fold(events, ITEMS)
    assert np.all(np.isfinite(user.positive.sums)) and float(np.max(user.positive.sums)) > 1e14


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"P13N_STATE_EVENT_WEIGHTS": '{"click": 1e7}'}, "state.event_weights.click"),
        ({"P13N_STATE_RATING_SCALE": "1e-9"}, "rating_scale"),
        ({"P13N_STATE_RATING_MIDPOINT": "1e300"}, "rating_midpoint"),
        ({"P13N_STATE_MAX_ABS_VALUE": "1e39"}, "max_abs_value"),
        ({"P13N_STATE_MIN_TIMESTAMP_MS": "-1"}, "min_timestamp_ms"),
    ],
)
def test_weights_that_could_overflow_the_sums_are_a_config_error(env, mentions):
    with pytest.raises(ConfigError, match=mentions):
        Config.from_sources(env=env)
