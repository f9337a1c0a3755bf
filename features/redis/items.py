"""Items in their shard hashes, sans I/O: the commands that store, read and delete them, and their replies
parsed (layout: :mod:`features.redis.keys`, ``P:{T:i<shard>}`` with ``v:<id>`` and ``m:<id>`` fields).

A vector is stored as little-endian bytes of ``state.vector_dtype`` and read back as float32; text and
attributes as one msgpack array (:class:`ItemMeta`).

>>> import numpy as np
>>> keys, dtype = KeyLayout("p"), np.dtype("<f2")
>>> sent = put_commands(keys, "t", {"a": ItemInfo(vector=np.ones(2), attributes={"genre": "x"}, text="A")}, dtype)
>>> sent[0][:2], sorted(sent[0][2::2])
(('HSET', 'p:{t:i3}'), ['m:a', 'v:a'])
>>> parse_items([[sent[0][5], sent[0][3]]], ["a"], dtype)["a"].vector.tolist()  # v, then m
[1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

from features.core.state import ItemInfo
from features.redis.commands import Command
from features.redis.keys import KeyLayout

__all__ = ["ItemMeta", "put_commands", "put_vector_commands", "delete_commands", "get_commands", "parse_items",
           "has_vector_commands", "parse_has_vector"]  # fmt: skip


class ItemMeta(msgspec.Struct, array_like=True):
    """An item's text and attributes, as stored in its ``m:<id>`` field."""

    text: str | None
    attributes: dict[str, str | int | float | bool | list[str]]


_meta_encoder = msgspec.msgpack.Encoder()
_meta_decoder = msgspec.msgpack.Decoder(ItemMeta)


def put_commands(keys: KeyLayout, tenant: str, items: Mapping[str, ItemInfo], dtype: np.dtype) -> list[Command]:
    """One ``HSET`` per item: its text and attributes, and its vector where given."""
    out: list[Command] = []
    for item_id, info in items.items():
        fields: list = [f"m:{item_id}", _meta_encoder.encode(ItemMeta(info.text, dict(info.attributes)))]
        if info.vector is not None:
            fields += (f"v:{item_id}", np.asarray(info.vector, dtype=dtype).tobytes())
        out.append(("HSET", keys.item_shard(tenant, item_id), *fields))
    return out


def put_vector_commands(keys: KeyLayout, tenant: str, items: Mapping[str, tuple[str, np.ndarray]],
                        dtype: np.dtype) -> list[Command]:  # fmt: skip
    """Vectors of first-seen items embedded from event text (``item -> (text, vector)``): the vector is set, the
    text only when the item has no text and attributes stored yet (``HSETNX``: a catalog's are kept)."""
    out: list[Command] = []
    for item_id, (text, vector) in items.items():
        key = keys.item_shard(tenant, item_id)
        out.append(("HSET", key, f"v:{item_id}", np.asarray(vector, dtype=dtype).tobytes()))
        out.append(("HSETNX", key, f"m:{item_id}", _meta_encoder.encode(ItemMeta(text, {}))))
    return out


def delete_commands(keys: KeyLayout, tenant: str, item_ids: Iterable[str]) -> list[Command]:
    """One ``HDEL`` of both fields per item."""
    return [("HDEL", keys.item_shard(tenant, item_id), f"v:{item_id}", f"m:{item_id}") for item_id in item_ids]


def get_commands(keys: KeyLayout, tenant: str, item_ids: Sequence[str]) -> list[Command]:
    """One ``HMGET v m`` per item, in the order of ``item_ids``."""
    return [("HMGET", keys.item_shard(tenant, item_id), f"v:{item_id}", f"m:{item_id}") for item_id in item_ids]


def parse_items(replies: Sequence, item_ids: Sequence[str], dtype: np.dtype) -> dict[str, ItemInfo]:
    """Known items among ``item_ids`` from :func:`get_commands`' replies (unknown ones are absent); vectors as
    float32."""
    found: dict[str, ItemInfo] = {}
    for item_id, (vector, meta) in zip(item_ids, replies):
        if vector is None and meta is None:
            continue
        decoded = _meta_decoder.decode(meta) if meta is not None else ItemMeta(None, {})
        vec = np.frombuffer(vector, dtype=dtype).astype(np.float32) if vector is not None else None
        found[item_id] = ItemInfo(vector=vec, attributes=decoded.attributes, text=decoded.text)
    return found


def has_vector_commands(keys: KeyLayout, tenant: str, item_ids: Sequence[str]) -> list[Command]:
    """One ``HEXISTS v`` per item."""
    return [("HEXISTS", keys.item_shard(tenant, item_id), f"v:{item_id}") for item_id in item_ids]


def parse_has_vector(replies: Sequence, item_ids: Sequence[str]) -> set[str]:
    """Which of ``item_ids`` have a stored vector, from :func:`has_vector_commands`' replies.

    >>> sorted(parse_has_vector([1, 0, True], ["a", "b", "c"]))
    ['a', 'c']
    """
    return {item_id for item_id, present in zip(item_ids, replies) if present}
