"""Binary form of a :class:`~features.core.memory.MemorySet`: one msgpack blob, vectors in one block.

Layout (a msgpack array): ``[format, dim, vector type, texts, roles, vectors, scales, terms,
term counts, mentions]`` —
texts and roles as lists of strings, ``vectors`` all memories' vectors back to back (``n × dim``
int8 or little-endian float16), ``scales`` one little-endian float32 per memory (int8: the
quantization step, ``max|v|/127``; float16: 1; 0 marks a memory without a vector, a negative scale
one whose vector is its raw text's, not its cleaned text's — :class:`~features.core.memory.Memory`'s
``exact_vector``), every memory's
BM25 terms back to back (:mod:`features.core.bm25`, 4 B each) with the number of terms per memory, and per
memory a list of mentions ``[ts_ms, event_id, session_id]``. The request path reads the columns
as they are (:func:`decode_columns`), without building a memory object per row.

Bytes per memory (measured by ``p13n eval memory`` and the tests): int8 ``dim + 4`` for the vector
(388 B at 384-d) plus its text (UTF-8, ≤ ``max_chars``), ~4 B per term (a 100-character turn has ~10
after stop words), ~3 B of framing and ~12 B + the ids per mention — about 0.6 KB for a
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

FORMAT = 1
#: Storage types of memory vectors.
VECTOR_TYPES = ("i8", "f2")


class MemoryFormatError(ValueError):
    """Stored memory bytes do not match this version or configuration."""


class _Record(msgspec.Struct, array_like=True):
    format: int
    dim: int
    vector_type: str
    texts: list[str]
    roles: list[str]
    vectors: bytes
    scales: bytes
    terms: bytes
    term_counts: list[int]
    mentions: list[list[Mention]]  # msgspec builds the NamedTuples itself


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Record)


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
    norms = np.linalg.norm(matrix, axis=1)
    return matrix / np.where(norms > 0, norms, 1.0)[:, None]


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
    return _encoder.encode((
        FORMAT, dim, vector_type, [m.text for m in rows], [m.role for m in rows], data, scales.tobytes(),
        terms, [len(m.terms) for m in rows], [[tuple(x) for x in m.mentions] for m in rows],
    ))  # fmt: skip


class Columns(NamedTuple):
    """The decoded columns of a stored memory set (one row per memory, first said first)."""

    texts: list[str]
    roles: list[str]
    vectors: np.ndarray  # n × dim float32, unit rows (zeros: no vector)
    has_vector: np.ndarray  # bool, n
    terms: np.ndarray  # uint32, every memory's terms back to back
    term_offsets: np.ndarray  # int64, n + 1
    mentions: list[list[Mention]]
    exact: np.ndarray  # bool, n: the vector is the cleaned text's


def decode_columns(data: bytes, dim: int) -> Columns:
    """The columns of :func:`encode_memories` bytes; raises :class:`MemoryFormatError`."""
    try:
        record = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MemoryFormatError(f"stored memories are not readable: {exc}") from exc
    if record.format != FORMAT:
        raise MemoryFormatError(f"stored memories have format {record.format}, this version reads {FORMAT}")
    if record.dim != dim:
        raise MemoryFormatError(f"stored memories have dim={record.dim}, the encoder has {dim}")
    if record.vector_type not in VECTOR_TYPES:
        raise MemoryFormatError(f"stored memories have an unknown vector type {record.vector_type!r}")
    n = len(record.texts)
    if not len(record.roles) == len(record.mentions) == len(record.term_counts) == n or len(record.scales) != 4 * n:
        raise MemoryFormatError("stored memories have columns of different lengths")
    scales = np.frombuffer(record.scales, dtype="<f4")
    matrix = dequantize(record.vectors, scales, dim, record.vector_type)
    terms = np.frombuffer(record.terms, dtype=TERM_DTYPE) if len(record.terms) % 4 == 0 else None
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(record.term_counts, out=offsets[1:])
    if terms is None or offsets[-1] != terms.size:
        raise MemoryFormatError("stored memory terms do not match their counts")
    mentions = record.mentions
    if any(not row for row in mentions):
        raise MemoryFormatError("a stored memory has no mention")
    return Columns(record.texts, record.roles, matrix, scales != 0, terms, offsets, mentions, scales >= 0)


def decode_memories(data: bytes, spec: MemorySpec, dim: int) -> MemorySet:
    """A :class:`MemorySet` from :func:`encode_memories` bytes; raises :class:`MemoryFormatError`."""
    cols = decode_columns(data, dim)
    out = MemorySet(spec, dim)
    offsets = cols.term_offsets
    for i, text in enumerate(cols.texts):
        vector = cols.vectors[i] if cols.has_vector[i] else None
        out.add_memory(Memory(text, cols.roles[i], vector, cols.mentions[i], cols.terms[offsets[i] : offsets[i + 1]],
                              bool(cols.exact[i])))
    return out
