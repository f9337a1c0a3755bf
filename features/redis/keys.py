"""The Redis key layout (DESIGN.md §5), in one place.

Every key starts with the configured prefix. Hash tags (the ``{…}`` part) decide
the Redis Cluster slot:

==============================  ======  =====================================================
key                             type    holds
==============================  ======  =====================================================
``P:{T/U}``                     hash    one user: ``v`` version, ``s`` state blob (with the user's last
                                        applied offset per partition), ``m`` memories blob (written with
                                        ``s``), ``mv`` the version that last wrote ``m`` (readers keep decoded
                                        memories while it holds) — one key per user, so delete is one DEL
                                        (hashes written before also hold ``o:<partition>`` fields, no longer used)
``P:{T:g}:pop``                 zset    forward-decayed item popularity
``P:{T:g}:meta``                hash    ``landmark`` of the popularity decay
``P:{T:g}:off``                 hash    partition -> last offset whose global deltas are applied
``P:{T:g}:cv:<item>``           zset    co-visited items of ``item``: a Space-Saving summary of at most
                                        ``state.covisit_top_m`` members (a compact listpack while the
                                        server's ``zset-max-listpack-entries`` covers it: README)
``P:{T:g}:cvn``                 hash    item -> occurrences ``n`` (co-visitation's cosine normalisation)
``P:{T:i<shard>}``              hash    items: ``v:<id>`` vector bytes, ``m:<id>`` text+attributes
==============================  ======  =====================================================

A tenant's global signals share one slot (they are updated together by one
script); items spread over ``ITEM_SHARDS`` slots; each user is its own slot.

>>> keys = KeyLayout("p13n")
>>> keys.user("shop", "u1"), keys.popularity("shop"), keys.item_shard("shop", "sku-1")
('p13n:{shop/u1}', 'p13n:{shop:g}:pop', 'p13n:{shop:i14}')
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["KeyLayout", "ITEM_SHARDS"]

ITEM_SHARDS = 16


@dataclass(frozen=True)
class KeyLayout:
    prefix: str

    def user(self, tenant: str, user_id: str) -> str:
        return f"{self.prefix}:{{{tenant}/{user_id}}}"

    def _global(self, tenant: str) -> str:
        return f"{self.prefix}:{{{tenant}:g}}"

    def popularity(self, tenant: str) -> str:
        return f"{self._global(tenant)}:pop"

    def global_meta(self, tenant: str) -> str:
        return f"{self._global(tenant)}:meta"

    def global_offsets(self, tenant: str) -> str:
        return f"{self._global(tenant)}:off"

    def covisit(self, tenant: str, item_id: str) -> str:
        return f"{self._global(tenant)}:cv:{item_id}"

    def covisits(self, tenant: str, item_ids: Iterable[str]) -> list[str]:
        """:meth:`covisit` of each item (the tenant's part built once: a global-deltas call names ~200 rows).

        >>> KeyLayout("p13n").covisits("shop", ["a", "b"]) == [KeyLayout("p13n").covisit("shop", i) for i in "ab"]
        True
        """
        prefix = f"{self._global(tenant)}:cv:"
        return [prefix + item_id for item_id in item_ids]

    def covisit_counts(self, tenant: str) -> str:
        return f"{self._global(tenant)}:cvn"

    def item_shard(self, tenant: str, item_id: str) -> str:
        shard = zlib.crc32(item_id.encode()) % ITEM_SHARDS
        return f"{self.prefix}:{{{tenant}:i{shard}}}"
