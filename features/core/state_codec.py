"""Binary form of a :class:`~features.core.state.UserState` (one msgpack blob).

Vectors are raw little-endian float32 bytes (the horizon embeddings) or float16
(the negative and text-topic embeddings, which only steer, never rank alone),
event-id hashes are their 8 bytes back to back — not JSON. Decoding checks the horizons and
dimension against the running configuration, so a changed configuration is
noticed instead of silently misreading bytes.

>>> import numpy as np
>>> from features.core.state import ACTIVITY_MAX_KEYS, HOUR_KEYS, StateSpec, UserState
>>> from p13n.config import StateConfig
>>> spec = StateSpec.from_config(StateConfig(), dim=3)
>>> user = UserState.new(spec)
>>> user.positive.update(10.0, 1.0, np.array([1.0, 2.0, 3.0]))
>>> back = decode_state(encode_state(user), spec)
>>> back.positive.sums[0].tolist(), back.positive.t_ref
([1.0, 2.0, 3.0], 10.0)
"""

from __future__ import annotations

import math

import msgspec
import numpy as np

from features.core.decay import SUM_DTYPE, DecayedSum, SparseDecayedSum
from features.core.history import HistoryEntry
from features.core.preferences import Preference
from features.core.state import ACTIVITY_MAX_KEYS, HOUR_KEYS, StateSpec, UserState

__all__ = ["encode_state", "decode_state", "StateFormatError"]

#: 2: one activity sum (event types and hours of day) replaced the type counts and the 24-d clock;
#: sparse sums are maps instead of parallel key and value arrays.
FORMAT = 2


class StateFormatError(ValueError):
    """Stored bytes do not match this version or configuration."""


class _Decayed(msgspec.Struct, array_like=True):
    sums: bytes
    weights: list[float]
    t_ref: float | None
    dtype: str


class _Sparse(msgspec.Struct, array_like=True):
    values: dict[str, float]  # a msgpack map: encoded straight from the dict
    t_ref: float | None


class _SparseV1(msgspec.Struct, array_like=True):
    keys: list[str]
    values: list[float]
    t_ref: float | None


class _Record(msgspec.Struct, array_like=True):
    format: int
    dim: int
    taus: list[float]
    positive: _Decayed
    negative: _Decayed
    text: _Decayed
    attributes: _Sparse
    activity: _Sparse
    #: The preference statements kept (``UserState.statements``). States written before the shown list was
    #: derived held the shown list itself here: a set of statements none of which replaces another, which
    #: reads back as the same preferences, so the layout and format number are unchanged.
    preferences: list[Preference]
    history: list[HistoryEntry]
    recent_ids: bytes
    offsets: dict[int, int]
    events_applied: int


class _RecordV1(msgspec.Struct, array_like=True):
    """Format 1, read for migration: a 24-d decayed clock and separate type counts."""

    format: int
    dim: int
    taus: list[float]
    positive: _Decayed
    negative: _Decayed
    text: _Decayed
    clock: _Decayed
    attributes: _SparseV1
    type_counts: _SparseV1
    preferences: list[Preference]
    history: list[HistoryEntry]
    recent_ids: bytes
    offsets: dict[int, int]
    events_applied: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Record)
_decoder_v1 = msgspec.msgpack.Decoder(_RecordV1)


def _upgrade_v1(old: _RecordV1, tau: float) -> _Record:
    """A format-1 record as format 2: the clock's hours join the type counts in one activity sum.

    Both decay with ``tau``; the hours, summed at the clock's reference time ``c``, are moved to the
    counts' landmark ``L`` (``× exp((c − L)/τ)``), so every read-out stays what it was."""
    counts, clock = old.type_counts, old.clock
    values, landmark = dict(zip(counts.keys, counts.values)), counts.t_ref
    if clock.t_ref is not None:
        if landmark is None:
            landmark = clock.t_ref
        hours = np.frombuffer(clock.sums, dtype=f"<{clock.dtype}").astype(np.float64)
        scale = math.exp((clock.t_ref - landmark) / tau)
        for key, value in zip(HOUR_KEYS, hours.tolist()):
            if value:
                values[key] = value * scale
    attributes = _Sparse(dict(zip(old.attributes.keys, old.attributes.values)), old.attributes.t_ref)
    return _Record(FORMAT, old.dim, old.taus, old.positive, old.negative, old.text, attributes,
                   _Sparse(values, landmark), old.preferences, old.history, old.recent_ids, old.offsets,
                   old.events_applied)  # fmt: skip


_DTYPES = {name: np.dtype(f"<{name}") for name in ("f4", "f2")}
_NEVER_UPDATED = {name: (b"", (), None, name) for name in _DTYPES}


def _pack(state: DecayedSum, dtype: str) -> tuple:
    """A :class:`_Decayed` as the tuple of its fields (see :func:`encode_state`).

    The bytes are remembered on the state (``memo``) until it changes: most writes leave
    some sums untouched (the negative and text ones, usually), and converting to float16
    is not cheap."""
    if state.t_ref is None:  # never updated (e.g. no negative signal yet): no bytes for its zeros
        return _NEVER_UPDATED[dtype]
    memo = state.memo
    if memo is None or memo[0] != dtype:
        memo = state.memo = (dtype, state.sums.astype(_DTYPES[dtype], copy=False).tobytes())
    return (memo[1], state.weights, state.t_ref, dtype)


def _unpack(packed: _Decayed, taus: np.ndarray, dim: int) -> DecayedSum:
    if packed.t_ref is None:
        return DecayedSum.zeros(taus, dim)
    sums = np.frombuffer(packed.sums, dtype=f"<{packed.dtype}").astype(SUM_DTYPE)
    if sums.size != taus.size * dim or len(packed.weights) != taus.size:
        raise StateFormatError("stored state has a different shape than the configured horizons/dimension")
    state = DecayedSum.restore(taus, sums.reshape(taus.size, dim), packed.weights, packed.t_ref)
    state.memo = (packed.dtype, packed.sums)  # the stored bytes are the state's own until it changes
    return state


def _pack_sparse(state: SparseDecayedSum) -> tuple:
    """A :class:`_Sparse` as the tuple of its fields."""
    return (state.values, state.t_ref)


def _unpack_sparse(packed: _Sparse, tau: float, max_keys: int) -> SparseDecayedSum:
    state = SparseDecayedSum(tau, max_keys)
    state.values = packed.values
    state.t_ref = packed.t_ref
    return state


def _ids_from_bytes(data: bytes) -> bytearray:
    if len(data) % 8:
        raise StateFormatError("stored user state has a truncated event-id list")
    return bytearray(data)


def encode_state(user: UserState) -> bytes:
    """Bytes for Redis.

    The fields of :class:`_Record` in order, as tuples: msgspec writes an ``array_like``
    struct as the array of its fields, so these are the very bytes the struct would give
    (a test holds them equal), without constructing structs on every write.
    """
    spec = user.spec
    return _encoder.encode((
        FORMAT, spec.dim, spec.taus.tolist(),
        _pack(user.positive, "f4"), _pack(user.negative, "f2"), _pack(user.text, "f2"),
        _pack_sparse(user.attributes), _pack_sparse(user.activity),
        user.statements, user.history, bytes(user.recent_ids), user.offsets, user.events_applied,
    ))  # fmt: skip


def decode_state(data: bytes, spec: StateSpec) -> UserState:
    """A :class:`UserState` from :func:`encode_state` bytes; raises :class:`StateFormatError` on mismatch."""
    try:
        record = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        try:  # written by an earlier version?
            old = _decoder_v1.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise StateFormatError(f"stored user state is not readable: {exc}") from exc
        if old.format != 1:
            raise StateFormatError(f"stored user state is not readable: {exc}") from exc
        record = _upgrade_v1(old, spec.long_tau)
    except msgspec.DecodeError as exc:
        raise StateFormatError(f"stored user state is not readable: {exc}") from exc
    if record.format != FORMAT:
        raise StateFormatError(f"stored user state has format {record.format}, this version reads {FORMAT}")
    if record.dim != spec.dim or record.taus != spec.taus.tolist():
        raise StateFormatError(f"stored user state was written with dim={record.dim}, horizons={record.taus}; "
                               f"configured dim={spec.dim}, horizons={spec.taus.tolist()}")  # fmt: skip
    user = UserState.__new__(UserState)
    user.spec = spec
    user.positive = _unpack(record.positive, spec.taus, spec.dim)
    long_taus = spec.long_taus
    user.negative = _unpack(record.negative, long_taus, spec.dim)
    user.text = _unpack(record.text, long_taus, spec.dim)
    user.attributes = _unpack_sparse(record.attributes, spec.long_tau, spec.max_attribute_values)
    user.activity = _unpack_sparse(record.activity, spec.long_tau, ACTIVITY_MAX_KEYS)
    user.statements = record.preferences
    user.history = record.history
    user.recent_ids = _ids_from_bytes(record.recent_ids)
    user.offsets = dict(record.offsets)
    user.events_applied = record.events_applied
    user.memories = None  # stored apart (features.core.memory_codec), loaded when needed
    return user
