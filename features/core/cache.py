"""A bounded, time-limited in-process LRU cache (items, user states, vectors, co-visitation rows).

Used by both edges: the consumer (items, user states) and the Serve app (items, candidate-text
vectors, co-visitation rows). Entries older than ``ttl_s`` are misses, so changes made by other
processes are picked up when an entry expires.

>>> now = [0.0]
>>> cache = TtlCache(max_items=2, ttl_s=10, clock=lambda: now[0])
>>> cache.put("a", "A"); cache.put("b", "B"); cache.put("c", "C")   # "a" is evicted (least recent)
>>> cache.get("a"), cache.get("c")
(None, 'C')
>>> now[0] = 11.0
>>> cache.get("c") is None                                          # expired
True
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["TtlCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, max_items: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_items = max_items
        self.ttl_s = ttl_s
        self.clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        stored_at, value = entry
        if self.clock() - stored_at > self.ttl_s:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        if self.max_items <= 0:
            return
        self._data[key] = (self.clock(), value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_items:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        """Take the entry out (None if absent or expired)."""
        entry = self._data.pop(key, None)
        if entry is None or self.clock() - entry[0] > self.ttl_s:
            return None
        return entry[1]

    def discard(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
