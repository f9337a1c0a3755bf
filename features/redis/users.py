"""A user's hash, sans I/O: the commands that read it, the script call that writes it, and their replies
parsed (layout: :mod:`features.redis.keys`; the script: :data:`~features.redis.scripts.APPLY_USERS`).

Reads return :data:`~features.redis.commands.Command` lists for an executor to send; parsers take the
replies in the same order. A user's state and its applied Kafka offsets (``UserState.offsets``) travel in
one blob, written by a compare-and-set on the user's version token (:class:`UserWrite`).
"""

from __future__ import annotations

import os
import secrets
import struct
from collections.abc import Sequence
from typing import NamedTuple

from features.core.memory import MemorySet, MemorySpec
from features.core.memory_codec import decode_memories, encode_memories
from features.core.state import StateSpec, UserState
from features.core.state_codec import decode_state, encode_state
from features.redis.commands import Command
from features.redis.keys import KeyLayout
from features.redis.scripts import APPLY_USERS

__all__ = ["UserWrite", "APPLIED", "CONFLICT", "USERS_PER_CALL", "new_version_token", "new_version_tokens",
           "read_commands", "parse_users", "write_call", "memories_blob", "write_result", "memories_commands",
           "parse_memories", "delete_command", "state_and_token_command"]  # fmt: skip

APPLIED, CONFLICT = 1, -1  # a write's status in the script's reply
USERS_PER_CALL = 50  # users written per script call off a cluster (RedisStore.users_per_call says why)


class UserWrite(NamedTuple):
    """A folded user state to write, guarded by the version it was read at (a compare-and-set).

    The state carries the Kafka offsets it applied (``UserState.offsets``), so the version guards them
    too: the one record of what was applied to the user.

    Versions are random tokens, not counters (0: no state yet): a writer that chains a write on one
    of its own not yet acknowledged writes expects that write's token, which another writer cannot
    have produced, so the chained write fails whenever the one before it did."""

    tenant: str
    user_id: str
    expected_version: int
    state: UserState
    new_version: int | None = None  # None: a fresh random token


def new_version_token() -> int:
    """A random version token, never 0 (62 bits: two writers picking the same one is a ~1e-18 chance).

    >>> 0 < new_version_token() < 2**62 + 1
    True
    """
    return secrets.randbits(62) + 1


def new_version_tokens(n: int) -> list[int]:
    """``n`` tokens as :func:`new_version_token` gives them, from one read of the OS's random source
    (one ``os.urandom`` call per token was ~2% of the consumer's time at one event per user write).

    >>> tokens = new_version_tokens(3)
    >>> len(tokens), all(0 < t < 2**62 + 1 for t in tokens)
    (3, True)
    """
    return [(word >> 2) + 1 for word in struct.unpack(f"<{n}Q", os.urandom(8 * n))]


def read_commands(keys: KeyLayout, users: Sequence[tuple[str, str]]) -> list[Command]:
    """One ``HMGET v s`` per (tenant, user_id): the version and the state blob.

    >>> read_commands(KeyLayout("p"), [("t", "u")])
    [('HMGET', 'p:{t/u}', 'v', 's')]
    """
    return [("HMGET", keys.user(tenant, user_id), "v", "s") for tenant, user_id in users]


def parse_users(replies: Sequence, spec: StateSpec) -> list[tuple[int, UserState | None]]:
    """(version, state or None) per :func:`read_commands` reply (version 0: no state yet); a reply that is an
    exception (a command error left in place by the pipeline) is raised.

    >>> parse_users([[None, None]], None)
    [(0, None)]
    """
    out: list[tuple[int, UserState | None]] = []
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
        version, blob = reply
        if blob is None:
            out.append((0, None))
        else:
            out.append((int(version), decode_state(blob, spec)))
    return out


def memories_blob(state: UserState, vector_type: str) -> bytes:
    """The user's memories to store with the state, or b"" when they did not change (left as stored); marks them
    unchanged (a write that fails is re-folded from what Redis holds)."""
    memories = state.memories
    if memories is None or not memories.changed:
        return b""
    memories.changed = False
    return encode_memories(memories, vector_type)


def write_call(keys: KeyLayout, writes: Sequence[UserWrite], ttl_ms: int, vector_type: str) -> tuple[str, list, list]:
    """The (script, keys, args) that writes ``writes`` atomically, each a compare-and-set on its version;
    ``ttl_ms`` expires the users, ``vector_type`` encodes memories (``memory.vector_type``)."""
    user_keys = [keys.user(w.tenant, w.user_id) for w in writes]
    args: list = [ttl_ms]
    for w in writes:
        version = w.new_version or new_version_token()
        args += (w.expected_version, version, encode_state(w.state), memories_blob(w.state, vector_type))
    return (APPLY_USERS, user_keys, args)


def write_result(replies: Sequence, ref: tuple[int, int]) -> tuple[int, int]:
    """(status, version) of the user write at ``ref`` (call position, index in its reply; see ``APPLY_USERS``).

    >>> write_result([[1, 7, -1, 3]], (0, 2))
    (-1, 3)
    """
    call, at = ref
    return int(replies[call][at]), int(replies[call][at + 1])


def state_and_token_command(keys: KeyLayout, tenant: str, user_id: str) -> Command:
    """``HMGET s mv``: the user's state blob and the token of its memories (the rewrite's first read; the
    memories, :func:`memories_commands`, are read after it, so never older than the token).

    >>> state_and_token_command(KeyLayout("p"), "t", "u")
    ('HMGET', 'p:{t/u}', 's', 'mv')
    """
    return ("HMGET", keys.user(tenant, user_id), "s", "mv")


def memories_commands(keys: KeyLayout, users: Sequence[tuple[str, str]]) -> list[Command]:
    """One ``HGET m`` per (tenant, user_id): the memories blob."""
    return [("HGET", keys.user(tenant, user_id), "m") for tenant, user_id in users]


def parse_memories(replies: Sequence, spec: MemorySpec, dim: int) -> list[MemorySet]:
    """Each user's memories from :func:`memories_commands`' replies (empty when none are stored); raises
    :class:`~features.core.memory_codec.MemoryFormatError` on unreadable bytes."""
    return [decode_memories(blob, spec, dim) if blob else MemorySet(spec, dim) for blob in replies]


def delete_command(keys: KeyLayout, tenant: str, user_id: str) -> Command:
    """``DEL`` of every key of the user (there is one); its reply counts the keys removed."""
    return ("DEL", keys.user(tenant, user_id))
