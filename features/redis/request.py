"""The request path's one read, sans I/O: the user's state, the popularity of some candidates and the items
of others, in one round trip (:func:`request_commands`, :func:`parse_request`).

Both executors run it: the sync store (:meth:`features.redis.store.RedisStore.read_request`) and the Serve
app on a ``redis.asyncio`` pipeline (:class:`serving.personalizer.Personalizer`, through the store's
``queue_request`` / ``parse_request``), so answers are identical for the same state. The Serve app asks for
the popularity of the candidates it does not hold and the items it has not cached, hence two id lists.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.core.state import ItemInfo, StateSpec, UserState
from features.core.state_codec import decode_state
from features.redis.commands import Command
from features.redis.global_signals import parse_popularity, popularity_commands
from features.redis.items import get_commands, parse_items
from features.redis.keys import KeyLayout

__all__ = ["request_commands", "parse_request"]


def request_commands(keys: KeyLayout, tenant: str, user_id: str, popular_ids: Sequence[str],
                     item_ids: Sequence[str]) -> list[Command]:  # fmt: skip
    """The user's state blob (``HGET s``), the landmark and ``popular_ids``' scores, then ``item_ids``' items.

    >>> [c[0] for c in request_commands(KeyLayout("p"), "t", "u", ["a"], ["a", "b"])]
    ['HGET', 'HGET', 'ZMSCORE', 'HMGET', 'HMGET']
    """
    return [("HGET", keys.user(tenant, user_id), "s"), *popularity_commands(keys, tenant, popular_ids),
            *get_commands(keys, tenant, item_ids)]  # fmt: skip


def parse_request(replies: Sequence, item_ids: Sequence[str], now_ms: int, *, spec: StateSpec, dtype: np.dtype,
                  tau_s: float) -> tuple[UserState | None, dict[str, ItemInfo], np.ndarray]:  # fmt: skip
    """(state or None, known items of ``item_ids``, popularity of the ``popular_ids`` at ``now_ms``) from
    :func:`request_commands`' replies; ``spec`` decodes the state, ``dtype`` the vectors, ``tau_s`` is
    ``state.popularity_tau_s``."""
    blob = replies[0]
    user = decode_state(blob, spec) if blob is not None else None
    popularity = parse_popularity(replies[1:3], now_ms, tau_s=tau_s)
    return user, parse_items(replies[3:], item_ids, dtype), popularity
