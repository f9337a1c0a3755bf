"""Read-outs of a user's state for people: the attribute strengths the profile inspector charts.

The state keeps attribute preferences at the long horizon only (one sparse decayed sum,
:class:`~features.core.decay.SparseDecayedSum`). The short-horizon strength of an attribute is
recomputed here from the bounded recent history (``state.history_size`` entries): each
remembered interaction adds its type's signed weight, decayed by the shortest horizon's τ, to
every categorical attribute of its item. History entries keep no rating value, so a ``rating``
counts with the rating weight, as a positive interaction. Both numbers are decayed sums of event
weights, in the same unit, so they can stand side by side in one chart.

>>> import numpy as np
>>> from features.core.events import Event
>>> from features.core.state import ItemInfo, StateSpec, UserState
>>> from p13n.config import StateConfig
>>> spec = StateSpec.from_config(StateConfig(horizons={"session": 3600.0, "long": 30 * 86400.0}), dim=2)
>>> user = UserState.new(spec)
>>> items = {"old": ItemInfo(attributes={"genre": "jazz"}), "new": ItemInfo(attributes={"genre": "rock"})}
>>> _ = user.fold([Event(event_id="e1", user_id="u", type="purchase", ts_ms=0, item_id="old"),
...                Event(event_id="e2", user_id="u", type="click", ts_ms=86_400_000, item_id="new")], items)
>>> view = attribute_horizons(user, items, now_ms=86_400_000)
>>> view["short"]["horizon"], view["long"]["horizon"]
('session', 'long')
>>> [(a["attribute"], round(a["long"], 2), round(a["short"], 2)) for a in view["top"]]
[('genre=jazz', 7.74, 0.0), ('genre=rock', 2.0, 2.0)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from features.core.history import NEGATIVE_TYPES
from features.core.state import ItemInfo, UserState

__all__ = ["attribute_horizons"]


def attribute_horizons(user: UserState, items: Mapping[str, ItemInfo], now_ms: int, top: int = 12) -> dict:
    """``{"short": {"horizon", "tau_s"}, "long": {"horizon", "tau_s"}, "top": [{"attribute", "long", "short"}]}``.

    ``top`` lists at most ``top`` attributes: the strongest at the long horizon (by magnitude), then
    those strongest at the short horizon that are not listed yet (a fresh interest shows before it
    weighs on the long horizon), each list taking half. ``items`` are the history's items (an item
    missing there adds nothing); ``now_ms`` is the read-out time (epoch ms)."""
    spec = user.spec
    short_at = min(range(len(spec.taus)), key=lambda i: spec.taus[i])
    long_at = max(range(len(spec.taus)), key=lambda i: spec.taus[i])
    short_tau = float(spec.taus[short_at])
    long_values = user.attribute_preferences(now_ms)
    short_values: dict[str, float] = {}
    for entry in user.history:
        info = items.get(entry.item_id)
        if info is None or not info.attribute_keys:
            continue
        weight = spec.weights.get(entry.type, 0.0)
        if entry.type in NEGATIVE_TYPES:
            weight = -weight
        decayed = weight * math.exp(-max(0.0, now_ms - entry.ts_ms) / 1000.0 / short_tau)
        for key in info.attribute_keys:
            short_values[key] = short_values.get(key, 0.0) + decayed
    by_long = sorted(long_values, key=lambda k: (-abs(long_values[k]), k))
    by_short = sorted((k for k, v in short_values.items() if v != 0.0), key=lambda k: (-abs(short_values[k]), k))
    chosen = by_long[: max(top - top // 2, top - len(by_short))]
    chosen += [k for k in by_short if k not in chosen][: top - len(chosen)]
    return {
        "short": {"horizon": spec.horizon_names[short_at], "tau_s": short_tau},
        "long": {"horizon": spec.horizon_names[long_at], "tau_s": float(spec.taus[long_at])},
        "top": [{"attribute": k, "long": round(long_values.get(k, 0.0), 4), "short": round(short_values.get(k, 0.0), 4)}
                for k in chosen],
    }
