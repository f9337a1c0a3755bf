"""Binary form of a :class:`~features.core.memory.MemorySet`: one msgpack blob, vectors in one block.

Layout (a msgpack array, format 2): ``[2, dim, vector type, texts, roles, vectors, scales, terms,
term counts, mention counts, mention times, event ids, session names, mention sessions]`` —
texts and roles as lists of strings, ``vectors`` all memories' vectors back to back (``n × dim``
int8 or little-endian float16), ``scales`` one little-endian float32 per memory (int8: the
quantization step, ``max|v|/127``; float16: 1; 0 marks a memory without a vector, a negative scale
one whose vector is its raw text's, not its cleaned text's — :class:`~features.core.memory.Memory`'s
``exact_vector``), every memory's
BM25 terms back to back (:mod:`features.core.bm25`, 4 B each) with the number of terms per memory, and the
mentions as columns, each memory's oldest first, memory after memory: how many per memory, their
times (little-endian int64 epoch ms), their event ids, and their sessions (little-endian int32 indices
into the distinct session names, -1 for none). The request path reads the columns as they are
(:func:`decode_columns`, a few numpy views and three lists), without building an object per memory or
per mention. Format 1 (mentions as ``[ts_ms, event_id, session_id]`` lists per memory) is still read;
the next write of the user stores format 2.

Bytes per memory (measured by ``p13n eval memory`` and the tests): int8 ``dim + 4`` for the vector
(388 B at 384-d) plus its text (UTF-8, ≤ ``max_chars``), ~4 B per term (a 100-character turn has ~10
after stop words), ~3 B of framing and ~13 B + the id per mention — about 0.6 KB for a
conversational turn of ~100 characters; float16 vectors add ``dim − 4``
(380 B). int8 keeps a unit vector's cosine to any query within ~0.4% of float32's (the rounding
error of a 384-d unit vector is ~0.002 in norm) and ``p13n eval memory`` shows no recall change, so
it is the default.

>>> import numpy as np
>>> from features.core.events import Event
>>> from features.core.memory import MemorySet, MemorySpec
>>> mem = MemorySet(MemorySpec(), dim=3)
>>> _ = mem.fold([Event(event_id="d1", user_id="u", type="message", ts_ms=5, text="I adopted a dog")],
...              {"I adopted a dog": np.array([3.0, 0.0, 4.0])})
>>> back = decode_memories(encode_memories(mem), MemorySpec(), dim=3)
>>> m = back.memories()[0]
>>> m.text, m.event_ids, [round(float(x), 2) for x in m.vector]
('I adopted a dog', ['d1'], [0.6, 0.0, 0.8])
"""

from __future__ import annotations

from typing import NamedTuple

import msgspec
import numpy as np

from features.core.bm25 import TERM_DTYPE
from features.core.memory import Memory, MemorySet, MemorySpec, Mention

__all__ = ["encode_memories", "decode_memories", "decode_columns", "Columns", "MemoryFormatError", "VECTOR_TYPES"]

FORMAT = 2
#: Storage types of memory vectors.
VECTOR_TYPES = ("i8", "f2")


class MemoryFormatError(ValueError):
    """Stored memory bytes do not match this version or configuration."""


class _Record1(msgspec.Struct, array_like=True, tag=1):
    """Format 1 (still read): every mention a ``[ts_ms, event_id, session_id]`` triple."""

    dim: int
    vector_type: str
    texts: list[str]
    roles: list[str]
    vectors: bytes
    scales: bytes
    terms: bytes
    term_counts: list[int]
    mentions: list[list[tuple[int, str, str | None]]]


class _Record2(msgspec.Struct, array_like=True, tag=2):
    """Format 2 (written): the mentions as columns, so that reading them builds no object per mention."""

    dim: int
    vector_type: str
    texts: list[str]
    roles: list[str]
    vectors: bytes
    scales: bytes
    terms: bytes
    term_counts: list[int]
    mention_counts: list[int]
    mention_ts: bytes  # little-endian int64 per mention
    event_ids: list[str]  # per mention
    session_names: list[str]  # distinct sessions
    mention_sessions: bytes  # little-endian int32 per mention: index into session_names, -1 for none


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Record1 | _Record2)


def quantize(matrix: np.ndarray, vector_type: str) -> tuple[bytes, np.ndarray]:
    """``matrix`` (n × dim float32) as stored bytes and per-row scales (float32).

    >>> data, scales = quantize(np.array([[0.6, -0.8]], np.float32), "i8")
    >>> list(np.frombuffer(data, np.int8)), round(float(scales[0]) * 127, 3)
    ([np.int8(95), np.int8(-127)], 0.8)
    """
    if vector_type == "f2":
        scales = np.where(np.any(matrix != 0, axis=1), 1.0, 0.0).astype("<f4")
        return matrix.astype("<f2").tobytes(), scales
    if vector_type != "i8":
        raise ValueError(f"vector type must be one of {VECTOR_TYPES}, got {vector_type!r}")
    peak = np.abs(matrix).max(axis=1) if matrix.size else np.zeros(len(matrix), np.float32)
    scales = (peak / 127.0).astype("<f4")
    safe = np.where(scales > 0, scales, 1.0)[:, None]
    return np.rint(matrix / safe).clip(-127, 127).astype(np.int8).tobytes(), scales


def dequantize(data: bytes, scales: np.ndarray, dim: int, vector_type: str) -> np.ndarray:
    """The float32 matrix of :func:`quantize`'s output, each nonzero row scaled to unit length."""
    raw = np.frombuffer(data, dtype=np.int8 if vector_type == "i8" else "<f2")
    if raw.size != len(scales) * dim:
        raise MemoryFormatError(f"stored memory vectors hold {raw.size} numbers, expected {len(scales)}×{dim}")
    matrix = raw.reshape(len(scales), dim).astype(np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
    matrix *= (1.0 / np.where(norms > 0, norms, 1.0))[:, None]
    return matrix


def encode_memories(memories: MemorySet, vector_type: str = "i8") -> bytes:
    """Bytes for Redis (layout in the module docstring)."""
    rows = memories.memories()
    dim = memories.dim
    matrix = np.zeros((len(rows), dim), dtype=np.float32)
    for i, memory in enumerate(rows):
        if memory.vector is not None:
            matrix[i] = memory.vector
    data, scales = quantize(matrix, vector_type)
    scales *= np.array([1.0 if m.exact_vector else -1.0 for m in rows], dtype=np.float32)
    terms = b"".join([m.terms.tobytes() for m in rows])
    mentions = [x for m in rows for x in m.mentions]
    sessions = list(dict.fromkeys(x.session_id for x in mentions if x.session_id is not None))
    place = {name: i for i, name in enumerate(sessions)}
    return _encoder.encode((
        FORMAT, dim, vector_type, [m.text for m in rows], [m.role for m in rows], data, scales.tobytes(),
        terms, [len(m.terms) for m in rows], [len(m.mentions) for m in rows],
        np.array([x.ts_ms for x in mentions], dtype="<i8").tobytes(), [x.event_id for x in mentions], sessions,
        np.array([place.get(x.session_id, -1) for x in mentions], dtype="<i4").tobytes(),
    ))  # fmt: skip


class Columns(NamedTuple):
    """The decoded columns of a stored memory set (one row per memory, first said first; per mention, each
    row's mentions in event-time order, row after row)."""

    texts: list[str]
    roles: list[str]
    vectors: np.ndarray  # n × dim float32, unit rows (zeros: no vector)
    has_vector: np.ndarray  # bool, n
    terms: np.ndarray  # uint32, every memory's terms back to back
    term_offsets: np.ndarray  # int64, n + 1
    exact: np.ndarray  # bool, n: the vector is the cleaned text's
    mention_offsets: np.ndarray  # int64, n + 1: row i's mentions are [mention_offsets[i], mention_offsets[i + 1])
    mention_ts: np.ndarray  # int64 epoch ms, per mention
    event_ids: list[str]  # per mention
    mention_sessions: np.ndarray  # int32 per mention: index into session_names, -1 for none
    session_names: list[str]

    def mentions(self, row: int) -> list[Mention]:
        """Row ``row``'s mentions, oldest first."""
        lo, hi = int(self.mention_offsets[row]), int(self.mention_offsets[row + 1])
        names = self.session_names
        return [Mention(int(t), e, names[s] if s >= 0 else None)
                for t, e, s in zip(self.mention_ts[lo:hi].tolist(), self.event_ids[lo:hi],
                                   self.mention_sessions[lo:hi].tolist())]  # fmt: skip


def _offsets(counts: list[int]) -> np.ndarray:
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _mention_columns(record: _Record1 | _Record2) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, list[str]]:
    """(offsets, times, event ids, session indices, session names) of either format's mentions."""
    if isinstance(record, _Record2):
        offsets = _offsets(record.mention_counts)
        ts = np.frombuffer(record.mention_ts, dtype="<i8") if len(record.mention_ts) % 8 == 0 else None
        sessions = record.mention_sessions
        sessions = np.frombuffer(sessions, dtype="<i4") if len(sessions) % 4 == 0 else None
        total = int(offsets[-1])
        if ts is None or sessions is None or not ts.size == sessions.size == len(record.event_ids) == total:
            raise MemoryFormatError("stored memory mentions do not match their counts")
        if sessions.size and (sessions.min() < -1 or sessions.max() >= len(record.session_names)):
            raise MemoryFormatError("a stored memory mention names an unknown session")
        if np.any(np.diff(offsets) == 0):
            raise MemoryFormatError("a stored memory has no mention")
        return offsets, ts.astype(np.int64), record.event_ids, sessions.astype(np.int32), record.session_names
    if any(not row for row in record.mentions):
        raise MemoryFormatError("a stored memory has no mention")
    flat = [x for row in record.mentions for x in row]
    names = list(dict.fromkeys(x[2] for x in flat if x[2] is not None))
    place = {name: i for i, name in enumerate(names)}
    return (_offsets([len(row) for row in record.mentions]), np.array([x[0] for x in flat], dtype=np.int64),
            [x[1] for x in flat], np.array([place.get(x[2], -1) for x in flat], dtype=np.int32), names)  # fmt: skip


def decode_columns(data: bytes, dim: int) -> Columns:
    """The columns of :func:`encode_memories` bytes (this format or the previous one); raises
    :class:`MemoryFormatError`."""
    try:
        record = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MemoryFormatError(f"stored memories are not readable (formats 1 and {FORMAT} are): {exc}") from exc
    if record.dim != dim:
        raise MemoryFormatError(f"stored memories have dim={record.dim}, the encoder has {dim}")
    if record.vector_type not in VECTOR_TYPES:
        raise MemoryFormatError(f"stored memories have an unknown vector type {record.vector_type!r}")
    n = len(record.texts)
    counts = record.mention_counts if isinstance(record, _Record2) else record.mentions
    if not len(record.roles) == len(counts) == len(record.term_counts) == n or len(record.scales) != 4 * n:
        raise MemoryFormatError("stored memories have columns of different lengths")
    scales = np.frombuffer(record.scales, dtype="<f4")
    matrix = dequantize(record.vectors, scales, dim, record.vector_type)
    terms = np.frombuffer(record.terms, dtype=TERM_DTYPE) if len(record.terms) % 4 == 0 else None
    offsets = _offsets(record.term_counts)
    if terms is None or offsets[-1] != terms.size:
        raise MemoryFormatError("stored memory terms do not match their counts")
    mentions = _mention_columns(record)
    return Columns(record.texts, record.roles, matrix, scales != 0, terms, offsets, scales >= 0, *mentions)


def decode_memories(data: bytes, spec: MemorySpec, dim: int) -> MemorySet:
    """A :class:`MemorySet` from :func:`encode_memories` bytes; raises :class:`MemoryFormatError`."""
    cols = decode_columns(data, dim)
    out = MemorySet(spec, dim)
    offsets = cols.term_offsets
    for i, text in enumerate(cols.texts):
        vector = cols.vectors[i] if cols.has_vector[i] else None
        out.add_memory(Memory(text, cols.roles[i], vector, cols.mentions(i), cols.terms[offsets[i] : offsets[i + 1]],
                              bool(cols.exact[i])))
    return out
