"""The catalog side of the processing stage: catalog records stored and embedded, and the items a
batch of events names resolved — per tenant, since two tenants' ``sku-1`` are different items.

Embedding is the slow part of a catalog poll (MovieLens' 9,742 titles: ~50 s with the fp32
encoder on one thread; the consumer's default int8-static encoder needs ~20 % fewer CPU-seconds per
title and runs on two threads, ``p13n bench encoder``), so :class:`ChunkedEncoder` encodes in chunks that each take a
bounded time (sized by the measured encode rate) and calls ``between_chunks`` after each one: the
consumer keeps its group membership alive there (pause, poll, resume), so one poll's embedding
never outlasts ``kafka.max_poll_interval_ms``. The chunk sizes therefore depend on timing; the
vectors do not (the consumer's encoders are batch-independent, see :mod:`features.encoder.runtime`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np

from features.core.cache import TtlCache
from features.core.events import Event, ItemRecord, Rejection, parse_item
from features.core.state import ItemInfo
from features.redis.store import RedisStore
from stream.records import BatchOutcome, DeadLetter, Record, decode_error

__all__ = ["Catalog", "ChunkedEncoder"]

#: Texts in the first chunk, before any rate is measured.
FIRST_CHUNK = 16


class ChunkedEncoder:
    """``encode(texts) -> (n, dim) float32`` in chunks of about ``chunk_s`` seconds each, calling
    ``between_chunks()`` after every chunk. Chunking does not change the vectors of a
    batch-independent encoder (the consumer's fp32 and int8-static variants).

    >>> calls = []
    >>> enc = ChunkedEncoder(lambda texts: np.zeros((len(texts), 2), np.float32), chunk_s=1.0,
    ...                      between_chunks=lambda: calls.append(1))
    >>> enc(["a"] * 40).shape, len(calls) >= 1
    ((40, 2), True)
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], chunk_s: float,
                 between_chunks: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        if chunk_s <= 0:
            raise ValueError("chunk_s must be positive")
        self.encode = encode
        self.chunk_s = chunk_s
        self.between_chunks = between_chunks
        self.clock = clock
        self.rate: float | None = None  # texts per second, smoothed over chunks

    def chunk_size(self) -> int:
        """Texts that fit in ``chunk_s`` at the measured rate (at least one)."""
        return FIRST_CHUNK if self.rate is None else max(1, int(self.rate * self.chunk_s))

    def __call__(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return self.encode(texts)
        parts = []
        start = 0
        while start < len(texts):
            size = self.chunk_size()
            began = self.clock()
            parts.append(self.encode(texts[start : start + size]))
            elapsed = self.clock() - began
            done = min(size, len(texts) - start)
            if elapsed > 0:
                rate = done / elapsed
                self.rate = rate if self.rate is None else 0.5 * self.rate + 0.5 * rate
            start += size
            self.between_chunks()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class Catalog:
    """Items of every tenant: catalog records applied, items of events resolved (and embedded once)."""

    def __init__(self, store: RedisStore, encode: Callable[[list[str]], np.ndarray], cache: TtlCache[str, ItemInfo],
                 parse: Callable[[bytes], ItemRecord | Rejection] = parse_item) -> None:  # fmt: skip
        self.store = store
        self.encode = encode
        self.cache = cache
        self.parse = parse

    def resolve(self, events: Sequence[Event], outcome: BatchOutcome) -> dict[str, dict[str, ItemInfo]]:
        """``{tenant: {item_id: ItemInfo}}`` of every item the events name, embedding first-seen items that
        carry text. Keyed by tenant first: two tenants' ``sku-1`` are different items."""
        by_tenant: dict[str, dict[str, str | None]] = defaultdict(dict)
        for e in events:
            if e.item_id is not None:
                known = by_tenant[e.tenant]
                if known.get(e.item_id) is None:
                    known[e.item_id] = e.item_text
        resolved: dict[str, dict[str, ItemInfo]] = {}
        for tenant, wanted in by_tenant.items():
            mine = resolved[tenant] = {}
            missing = []
            for item_id in wanted:
                cached = self.cache.get(f"{tenant}\0{item_id}")
                if cached is not None and cached.vector is not None:
                    mine[item_id] = cached
                else:
                    missing.append(item_id)
            if not missing:
                continue
            stored = self.store.get_items(tenant, missing)
            to_embed = {i: wanted[i] for i in missing if (i not in stored or stored[i].vector is None) and wanted[i]}
            if to_embed:
                ids = sorted(to_embed)
                vectors = self.encode([to_embed[i] or "" for i in ids])
                self.store.put_item_vectors(tenant, {i: (to_embed[i] or "", v) for i, v in zip(ids, vectors)})
                outcome.items_embedded += len(ids)
                for i, v in zip(ids, vectors):
                    old = stored.get(i)
                    stored[i] = ItemInfo(vector=v, attributes=old.attributes if old else {},
                                         text=(old.text if old and old.text else to_embed[i]))  # fmt: skip
            for item_id, info in stored.items():
                self.cache.put(f"{tenant}\0{item_id}", info)
                mine[item_id] = info
        return resolved

    def apply(self, records: Sequence[Record]) -> BatchOutcome:
        """Catalog records: store text, attributes and a vector; ``deleted`` removes the item. A record
        that does not parse — or whose parsing raised (``decode_error``) — is a dead letter."""
        outcome = BatchOutcome()
        latest: dict[tuple[str, str], ItemRecord] = {}
        for record in records:
            try:
                parsed = self.parse(record.value or b"")
            except Exception as exc:  # noqa: BLE001 - the safety net: no record's decoding may stop the loop
                parsed = decode_error(exc)
            if isinstance(parsed, Rejection):
                outcome.dead_letters.append(DeadLetter(record, parsed.reason, parsed.detail))
            else:
                latest[(parsed.tenant, parsed.item_id)] = parsed  # last write in the batch wins
        by_tenant: dict[str, list[ItemRecord]] = defaultdict(list)
        for (tenant, _), item in latest.items():
            by_tenant[tenant].append(item)
        for tenant, tenant_items in by_tenant.items():
            deleted = [i.item_id for i in tenant_items if i.deleted]
            if deleted:
                self.store.delete_items(tenant, deleted)
            live = [i for i in tenant_items if not i.deleted]
            with_text = [i for i in live if i.text]
            vectors = self.encode([i.text or "" for i in with_text]) if with_text else []
            vector_of = {i.item_id: v for i, v in zip(with_text, vectors)}
            infos = {i.item_id: ItemInfo(vector=vector_of.get(i.item_id), attributes=dict(i.attributes), text=i.text)
                     for i in live}  # fmt: skip
            if infos:
                self.store.put_items(tenant, infos)
            outcome.items_embedded += len(with_text)
            for item_id in [*deleted, *infos]:
                self.cache.discard(f"{tenant}\0{item_id}")
            outcome.applied += len(live) + len(deleted)
        return outcome
