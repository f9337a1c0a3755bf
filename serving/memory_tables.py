"""Decoded memories a serving replica keeps per user, valid while the token stored beside them holds.

A user's memories blob (field ``m`` of the user hash, ~250 KB at 500 memories) is written in the same
atomic script as ``mv``, the version token of that write (:data:`features.redis.scripts.APPLY_USERS`).
A rewrite reads ``mv`` with the state (a few bytes) and fetches and decodes ``m`` only when the token
differs from the one its decoded copy was made at; tokens are random 62-bit numbers, so a deleted
and re-created user never matches an old copy. ``m`` is read after ``mv``, so a copy is never older
than the token it is filed under (at worst newer: the next read fetches it again).
"""

from __future__ import annotations

from features.core.cache import TtlCache
from features.core.memory_codec import MemoryFormatError, decode_columns
from features.core.memory_retrieval import MemoryTable

__all__ = ["MemoryTables"]


class MemoryTables:
    """At most ``max_users`` decoded tables (least recently used dropped first; ~1 MB each at 500
    memories of ``dim`` 384: the float32 vectors dominate), keyed by (tenant, user) and token."""

    def __init__(self, max_users: int, dim: int) -> None:
        self.dim = dim
        self._tables: TtlCache[tuple[str, str], tuple[bytes, MemoryTable]] = TtlCache(max_users, float("inf"))

    def get(self, tenant: str, user_id: str, token: bytes | None) -> MemoryTable | None:
        """The table decoded at ``token``; None when there is none or the token differs (or is None:
        memories written before tokens were)."""
        if token is None:
            return None
        entry = self._tables.get((tenant, user_id))
        return entry[1] if entry is not None and entry[0] == token else None

    def decode(self, tenant: str, user_id: str, token: bytes | None, blob: bytes) -> MemoryTable | bytes:
        """``blob`` decoded, and kept under ``token`` when there is one; unreadable bytes are given back
        as they are (the caller reports them skipped)."""
        try:
            table = MemoryTable(decode_columns(blob, self.dim))
        except MemoryFormatError:
            return blob
        if token is not None:
            self._tables.put((tenant, user_id), (token, table))
        return table

    def drop(self, tenant: str, user_id: str) -> None:
        """Forget the user's table (it is deleted)."""
        self._tables.pop((tenant, user_id))
