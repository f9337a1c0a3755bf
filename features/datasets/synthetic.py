"""A synthetic event stream with drifting interests, for tests, the demo and ``p13n eval``.

Items belong to categories and carry text built from the category's words (so a
sentence encoder places same-category items together) and a brand. Every user
has a first interest and, part-way through, drifts to a second one; events are
drawn from the *current* interest, often continue a "trail" (item → its
successor, which is what co-visitation learns), and mix types realistically.
Some events arrive out of order and some are duplicated by the "producer"
(same ``event_id`` twice) — the consumer must cope with both.

>>> data = generate(SyntheticSpec(users=5, items_per_category=6, events_per_user=20, seed=1))
>>> len(data.items), len({e["user_id"] for e in data.events})
(48, 5)
>>> data == generate(SyntheticSpec(users=5, items_per_category=6, events_per_user=20, seed=1))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SyntheticSpec", "SyntheticData", "generate", "CATEGORIES"]

#: category -> (nouns, adjectives): the words item texts are made of.
CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    "running": (["running shoes", "trail runners", "marathon socks", "running jacket", "sports watch", "hydration vest"],
                ["lightweight", "cushioned", "breathable", "waterproof", "fast"]),
    "jazz": (["jazz vinyl", "bebop record", "saxophone album", "swing collection", "live jazz set", "piano trio LP"],
             ["classic", "remastered", "smoky", "late-night", "legendary"]),
    "vegan": (["vegan cookbook", "tofu press", "plant-based protein", "lentil soup kit", "oat milk maker", "spice set"],
              ["organic", "wholesome", "plant-based", "spicy", "homemade"]),
    "camping": (["camping tent", "sleeping bag", "camp stove", "headlamp", "trekking poles", "water filter"],
                ["ultralight", "rugged", "compact", "four-season", "durable"]),
    "gaming": (["gaming mouse", "mechanical keyboard", "gaming headset", "controller", "racing wheel", "gaming chair"],
               ["RGB", "wireless", "pro", "low-latency", "ergonomic"]),
    "baby": (["baby stroller", "diaper bag", "baby monitor", "crib mattress", "teething toy", "baby carrier"],
             ["soft", "safe", "foldable", "hypoallergenic", "gentle"]),
    "photography": (["mirror-less camera", "prime lens", "camera tripod", "flash unit", "camera bag", "memory card"],
                    ["sharp", "professional", "fast-focus", "weather-sealed", "compact"]),
    "gardening": (["garden hose", "pruning shears", "seed kit", "raised bed", "compost bin", "watering can"],
                  ["green", "sturdy", "heirloom", "self-watering", "eco"]),
}
BRANDS = ["Acme", "Northwind", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Tyrell"]
PREFERENCE_TEXT = {
    "running": "I train for marathons and prefer lightweight gear.",
    "jazz": "I love classic jazz, especially vinyl records.",
    "vegan": "I am vegan; never suggest meat or dairy.",
    "camping": "I go camping most weekends and need ultralight equipment.",
    "gaming": "I play competitive games and care about low latency.",
    "baby": "We just had a baby; safety matters most to me.",
    "photography": "I shoot landscapes and prefer weather-sealed cameras.",
    "gardening": "I grow vegetables in raised beds.",
}
#: positive event types and their probabilities (skip/dislike are drawn separately)
TYPE_MIX = {"view": 0.58, "click": 0.25, "cart": 0.07, "purchase": 0.04, "like": 0.03, "rating": 0.03}


@dataclass(frozen=True)
class SyntheticSpec:
    """Knobs of the generator; the defaults make a quick but meaningful dataset."""

    users: int = 200
    items_per_category: int = 40
    events_per_user: int = 60
    seed: int = 0
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    days: float = 60.0
    drift_at: float = 0.6  # fraction of a user's events after which interest drifts
    trail_probability: float = 0.35  # next item is the current item's successor
    negative_probability: float = 0.05
    out_of_order_fraction: float = 0.05
    duplicate_fraction: float = 0.02
    tenant: str = "default"
    user_prefix: str = "user-"


@dataclass
class SyntheticData:
    """Items (catalog records) and events (in the order a producer would emit them)."""

    items: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    interests: dict[str, tuple[str, str]] = field(default_factory=dict)  # user -> (before, after drift)


def generate(spec: SyntheticSpec) -> SyntheticData:
    """Generate a dataset; the same spec always gives the same data."""
    rng = np.random.default_rng(spec.seed)
    categories = list(CATEGORIES)
    items, by_category = _make_items(spec, rng)
    successor = {}
    for cat_items in by_category.values():
        order = rng.permutation(len(cat_items))
        for a, b in zip(order, np.roll(order, -1)):
            successor[cat_items[a]["item_id"]] = cat_items[b]["item_id"]
    item_by_id = {it["item_id"]: it for it in items}
    # popularity inside a category is Zipf-like: a few items get most of the traffic
    zipf = {c: _zipf_weights(len(v), rng) for c, v in by_category.items()}

    data = SyntheticData(items=items)
    span_ms = int(spec.days * 86_400_000)
    counter = 0
    for u in range(spec.users):
        user_id = f"{spec.user_prefix}{u:05d}"
        first, second = rng.choice(len(categories), size=2, replace=False)
        interest = (categories[first], categories[second])
        data.interests[user_id] = interest
        disliked = categories[(first + 3) % len(categories)]
        times = np.sort(rng.integers(0, span_ms, size=spec.events_per_user)) + spec.start_ms
        drift_index = int(spec.events_per_user * spec.drift_at)
        current: str | None = None
        user_events: list[dict] = []
        if rng.random() < 0.5:
            user_events.append(_event(f"ev-{counter}", user_id, "preference", int(times[0]) - 1000, spec,
                                      text=PREFERENCE_TEXT[interest[0]]))  # fmt: skip
            counter += 1
        for n, ts in enumerate(times):
            category = interest[0] if n < drift_index else interest[1]
            if rng.random() < 0.15:  # exploration outside the main interest
                category = categories[int(rng.integers(len(categories)))]
            if current is not None and item_by_id[current]["attributes"]["category"] == category and rng.random() < spec.trail_probability:
                item_id = successor[current]
            else:
                pool = by_category[category]
                item_id = pool[int(rng.choice(len(pool), p=zipf[category]))]["item_id"]
            etype, value = _draw_type(rng)
            if rng.random() < spec.negative_probability:
                pool = by_category[disliked]
                item_id = pool[int(rng.integers(len(pool)))]["item_id"]
                etype, value = ("dislike" if rng.random() < 0.5 else "skip"), None
            else:
                current = item_id
            item = item_by_id[item_id]
            user_events.append(_event(f"ev-{counter}", user_id, etype, int(ts), spec, item_id=item_id,
                                      item_text=item["text"], value=value))  # fmt: skip
            counter += 1
        data.events.extend(user_events)
    data.events.sort(key=lambda e: (e["timestamp"], e["event_id"]))
    _disorder(data.events, spec, rng)
    return data


def _make_items(spec: SyntheticSpec, rng: np.random.Generator) -> tuple[list[dict], dict[str, list[dict]]]:
    items: list[dict] = []
    by_category: dict[str, list[dict]] = {}
    for category, (nouns, adjectives) in CATEGORIES.items():
        for k in range(spec.items_per_category):
            noun = nouns[k % len(nouns)]
            adjective = adjectives[int(rng.integers(len(adjectives)))]
            brand = BRANDS[int(rng.integers(len(BRANDS)))]
            item = {
                "item_id": f"{category}-{k:03d}",
                "text": f"{adjective.capitalize()} {noun} by {brand}",
                "attributes": {"category": category, "brand": brand},
                "tenant": spec.tenant,
            }
            items.append(item)
            by_category.setdefault(category, []).append(item)
    return items, by_category


def _zipf_weights(n: int, rng: np.random.Generator) -> np.ndarray:
    ranks = rng.permutation(n) + 1
    weights = 1.0 / ranks.astype(float) ** 0.8
    return weights / weights.sum()


def _draw_type(rng: np.random.Generator) -> tuple[str, float | None]:
    types = list(TYPE_MIX)
    etype = types[int(rng.choice(len(types), p=np.array(list(TYPE_MIX.values())) / sum(TYPE_MIX.values())))]
    value = float(rng.integers(4, 6)) if etype == "rating" else None
    return etype, value


def _event(event_id: str, user_id: str, etype: str, ts: int, spec: SyntheticSpec, **extra) -> dict:
    event = {"event_id": event_id, "user_id": user_id, "type": etype, "timestamp": ts, "tenant": spec.tenant}
    event.update({k: v for k, v in extra.items() if v is not None})
    return event


def _disorder(events: list[dict], spec: SyntheticSpec, rng: np.random.Generator) -> None:
    """Swap a fraction of events with a later neighbour and duplicate a fraction (same event_id)."""
    n = len(events)
    if n < 2:
        return
    for i in rng.choice(n - 1, size=int(n * spec.out_of_order_fraction), replace=False):
        j = min(n - 1, int(i) + int(rng.integers(1, 20)))
        events[i], events[j] = events[j], events[i]
    for i in sorted(rng.choice(n, size=int(n * spec.duplicate_fraction), replace=False), reverse=True):
        j = min(n, int(i) + int(rng.integers(1, 50)))
        events.insert(j, dict(events[int(i)]))
