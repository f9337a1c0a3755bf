"""The event vocabulary: every event type of the event contract (DESIGN.md §2), how types group, and the
Kafka key of a user's (or item's) records.

A leaf module (no p13n imports): configuration validates its per-type weights against it, the parser
(:mod:`features.core.events`) types events with it, the fold and the prompt ask it which types are negative and
which carry text, the producers key records with :func:`user_key`.

>>> EVENT_TYPES[:3], "message" in ITEM_EVENT_TYPES, sorted(NEGATIVE_TYPES), sorted(TEXT_EVENT_TYPES)
(('view', 'click', 'cart'), False, ['dislike', 'skip'], ['message', 'preference'])
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["EventType", "EVENT_TYPES", "ITEM_EVENT_TYPES", "TEXT_EVENT_TYPES", "NEGATIVE_TYPES", "user_key"]

#: An event's ``type``.
EventType = Literal["view", "click", "cart", "purchase", "like", "dislike", "skip", "rating", "message", "preference"]

#: Every event type, in the contract's order.
EVENT_TYPES: tuple[str, ...] = get_args(EventType)

#: Event types that carry what the user wrote (``text``) instead of an item.
TEXT_EVENT_TYPES = frozenset({"message", "preference"})

#: Event types that must name an item (``message`` and ``preference`` carry text instead).
ITEM_EVENT_TYPES = frozenset(EVENT_TYPES) - TEXT_EVENT_TYPES

#: Event types that say the user does not want the item: they weigh negatively and are never recommended back.
NEGATIVE_TYPES = frozenset({"dislike", "skip"})


def user_key(tenant: str, user_id: str) -> str:
    """``tenant/user_id`` — the Kafka key of a user's events, the partitioning key (tenants cannot contain
    ``/``); catalog records are keyed ``tenant/item_id`` the same way.

    >>> user_key("shop", "u/1")
    'shop/u/1'
    """
    return f"{tenant}/{user_id}"
