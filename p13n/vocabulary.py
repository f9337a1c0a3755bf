"""The event vocabulary: every event type of the event contract (DESIGN.md §2) and how types group.

A leaf module (no p13n imports): configuration validates its per-type weights against it, the parser
(:mod:`features.events`) types events with it, the fold and the prompt ask it which types are negative.

>>> EVENT_TYPES[:3], "message" in ITEM_EVENT_TYPES, sorted(NEGATIVE_TYPES)
(('view', 'click', 'cart'), False, ['dislike', 'skip'])
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["EventType", "EVENT_TYPES", "ITEM_EVENT_TYPES", "NEGATIVE_TYPES"]

#: An event's ``type``.
EventType = Literal["view", "click", "cart", "purchase", "like", "dislike", "skip", "rating", "message", "preference"]

#: Every event type, in the contract's order.
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

#: Event types that must name an item (``message`` and ``preference`` carry text instead).
ITEM_EVENT_TYPES = frozenset(EVENT_TYPES) - {"message", "preference"}

#: Event types that say the user does not want the item: they weigh negatively and are never recommended back.
NEGATIVE_TYPES = frozenset({"dislike", "skip"})
