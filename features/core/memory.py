"""Conversational memories: what a user said, kept as bounded, retrievable entries (DESIGN.md §3).

Each ``message`` event becomes a *mention*: its ``event_id``, event time, ``session_id`` and role.
Mentions of the same text (after :func:`clean_text`: control characters dropped, whitespace
collapsed, NFKC, capped at ``MemorySpec.max_chars``) by the same role share one :class:`Memory`
holding the text and its vector once and every mention's id — a near-duplicate said twice costs
one vector. Memories whose texts differ but whose vectors are nearly the same are merged when
they are retrieved (:mod:`features.core.memory_retrieval`), where their ids are listed together.

**Bound and eviction.** A user keeps at most ``MemorySpec.max_mentions`` mentions. When there are
more, the ones with the lowest *importance* go, and a memory goes with its last mention::

    importance(m) = t_m / tau + length_weight · ln(1 + chars / 100)

— the log of a decayed weight ``exp(−(now − t)/tau) · (1 + chars/100)^length_weight``, minus the
same ``now/tau`` for everybody, so the order of mentions does not change as time passes and needs
no clock. With the default ``tau`` of 30 days and ``length_weight`` 1, a 300-character turn
outlives a 20-character one said ~40 days later (``ln(4/1.2)·30`` days); ``length_weight = 0``
evicts by recency alone (``p13n eval memory`` measures both). How often a memory was retrieved is
*not* part of the score: it is a read-path signal, and writing it back would make the state depend
on requests, not only on events (replays would no longer rebuild it).

**Order independence and idempotence.** The kept mentions are the ``max_mentions`` most important
of all distinct event ids ever folded, ``top(top(A) ∪ B) = top(A ∪ B)``, and memories are those
mentions grouped by (role, text): the same events in any order, in any batches, give the same
memories, and an event id folded twice counts once (an event is identified by its id; a replayed
id carries the same content). Ties in importance break on the event id.

>>> import numpy as np
>>> from features.core.events import Event
>>> spec = MemorySpec(max_mentions=2, length_weight=0)
>>> mem = MemorySet(spec, dim=2)
>>> said = lambda i, t, text: Event(event_id=i, user_id="u", type="message", ts_ms=t, text=text)
>>> vectors = {"I adopted a dog": np.array([1.0, 0.0]), "ok": np.array([0.0, 1.0])}
>>> dog = said("e1", 1000, "I adopted a dog")
>>> mem.fold([dog, said("e2", 2000, "ok"), dog], vectors)
2
>>> [(m.text, m.event_ids) for m in mem.memories()]
[('I adopted a dog', ['e1']), ('ok', ['e2'])]
>>> mem.fold([said("e3", 3000, "ok ")], vectors)    # same text: one memory, the oldest mention evicted
1
>>> [(m.text, m.event_ids) for m in mem.memories()]
[('ok', ['e2', 'e3'])]
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from features.core.bm25 import term_hashes
from features.core.events import Event

__all__ = ["MemorySpec", "Mention", "Memory", "MemorySet", "clean_text", "importance", "DEFAULT_MAX_MENTIONS"]

#: Default bound of mentions per user: long real conversations run to ~700 turns per user; 1000 keeps
#: all of them (~0.35-0.5 MB for such a user, see :mod:`features.core.memory_codec`). Recall falls as soon as
#: the bound cuts into a conversation: on 5 generated conversations of 632 turns (``p13n eval memory``,
#: fused @1024 tokens) 0.76 with every turn kept, 0.51 with 300 (0.46 evicting by recency alone,
#: ``length_weight=0``), 0.29 with 150.
DEFAULT_MAX_MENTIONS = 1000
#: Roles a memory may have: what the user said, or (when configured) the assistant's answer.
ROLES = ("user", "assistant")


@dataclass(frozen=True)
class MemorySpec:
    """How memories are kept. ``tau_s``: seconds for the importance to fall by e; ``length_weight``:
    exponent of the length factor (0: recency alone); ``max_chars``: cap of a memory's text."""

    max_mentions: int = DEFAULT_MAX_MENTIONS
    tau_s: float = 30 * 86_400.0
    length_weight: float = 1.0
    max_chars: int = 480

    @classmethod
    def from_config(cls, config) -> MemorySpec:
        """From the ``[memory]`` section (:class:`p13n.config.MemoryConfig`)."""
        return cls(max_mentions=config.max_mentions, tau_s=config.tau_days * 86_400.0,
                   length_weight=config.length_weight, max_chars=config.max_chars)  # fmt: skip

    def __post_init__(self) -> None:
        if self.max_mentions < 1:
            raise ValueError(f"max_mentions must be >= 1, got {self.max_mentions}")
        if not self.tau_s > 0:
            raise ValueError(f"tau_s must be > 0, got {self.tau_s}")
        if not 0 <= self.length_weight <= 10:
            raise ValueError(f"length_weight must be in [0, 10], got {self.length_weight}")
        if not 16 <= self.max_chars <= 8192:
            raise ValueError(f"max_chars must be in [16, 8192], got {self.max_chars}")


#: Control and line/paragraph separators become spaces; format characters (bidi overrides, zero widths) go.
_REPLACE = {"Cc": " ", "Zl": " ", "Zp": " ", "Cf": ""}


def clean_text(text: str, max_chars: int) -> str:
    """``text`` without control or format characters, whitespace collapsed, NFKC-normalised and capped
    (an ellipsis marks the cut) — the form a memory stores and merges on. Quoting for the prompt is
    :func:`features.core.prompt.sanitize`'s job, at render time.

    >>> clean_text("  I\\u200b adopted\\x00 a\\n\\ndog  ", 80)
    'I adopted a dog'
    >>> clean_text("word " * 10, 16)
    'word word word…'
    """
    normal = unicodedata.normalize("NFKC", text)
    kept = "".join(_REPLACE.get(unicodedata.category(c), c) for c in normal)
    cleaned = " ".join(kept.split())
    if len(cleaned) > max_chars:
        cleaned = cleaned[: max_chars - 1].rstrip() + "…"
    return cleaned


class Mention(NamedTuple):
    """One event that said a memory's text. Tuples order by (time, event id): the event-time order."""

    ts_ms: int
    event_id: str
    session_id: str | None


def importance(ts_ms: int, chars: int, spec: MemorySpec) -> float:
    """The eviction score of a mention (module docstring): higher is kept longer.

    >>> spec = MemorySpec()
    >>> importance(0, 300, spec) > importance(30 * 86_400_000, 20, spec)   # long beats short a month later
    True
    >>> importance(0, 300, MemorySpec(length_weight=0)) < importance(1, 20, MemorySpec(length_weight=0))
    True
    """
    return ts_ms / 1000.0 / spec.tau_s + spec.length_weight * math.log1p(chars / 100.0)


@dataclass
class Memory:
    """What a user said once or more: ``text`` (cleaned), ``role``, unit ``vector`` (float32, or None when
    the text was never embedded), its mentions, oldest first, and its BM25 ``terms``
    (:func:`features.core.bm25.term_hashes` of the text, computed once)."""

    text: str
    role: str
    vector: np.ndarray | None
    mentions: list[Mention] = field(default_factory=list)
    terms: np.ndarray | None = None
    exact_vector: bool = True  # False: the vector is a raw text's, to be replaced by the cleaned text's

    def __post_init__(self) -> None:
        if self.terms is None:
            self.terms = term_hashes(self.text)

    @property
    def event_ids(self) -> list[str]:
        """Every mention's event id, in event-time order."""
        return [m.event_id for m in self.mentions]

    @property
    def first_ms(self) -> int:
        """When it was first said (epoch ms)."""
        return self.mentions[0].ts_ms

    @property
    def last_ms(self) -> int:
        """When it was said last (epoch ms)."""
        return self.mentions[-1].ts_ms

    @property
    def session_id(self) -> str | None:
        return self.mentions[0].session_id


def _unit(vector: np.ndarray | None) -> np.ndarray | None:
    if vector is None:
        return None
    vec = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 and math.isfinite(norm) else None


class MemorySet:
    """A user's memories. :meth:`fold` adds message events (any order, any batches, replays welcome).

    A memory's vector is that of its cleaned text (the key of ``text_vectors`` the consumer encodes), so
    it does not depend on the order; when only the raw text's vector is given, the earliest mention's is
    taken (raw texts that clean to the same form may embed a little differently, and which mention
    was the earliest can depend on what was evicted in between)."""

    def __init__(self, spec: MemorySpec, dim: int) -> None:
        self.spec = spec
        self.dim = dim
        self._by_key: dict[tuple[str, str], Memory] = {}
        self._ids: set[str] = set()
        #: Whether :meth:`fold` changed anything since the writer last stored the set (it resets this).
        self.changed = False

    # --- fold ------------------------------------------------------------------------------
    def fold(self, events: Iterable[Event], text_vectors: Mapping[str, np.ndarray] | None = None,
             *, role_of=None) -> int:  # fmt: skip
        """Add the ``message`` events among ``events``; returns how many new mentions were added (before
        eviction). ``text_vectors`` maps a text to its embedding (the consumer's encoder output): the
        cleaned text (:func:`clean_text`; :meth:`texts_to_embed` lists them), else the raw ``text``.
        ``role_of(event)`` gives its role (default: ``context["role"]`` when it is a known role, else
        ``"user"``). Other event types and already folded ids are ignored."""
        vectors = text_vectors or {}
        added = 0
        for event in events:
            if event.type != "message" or not event.text or event.event_id in self._ids:
                continue
            text = clean_text(event.text, self.spec.max_chars)
            if not text:
                continue
            role = role_of(event) if role_of is not None else _role(event)
            key = (role, text)
            memory = self._by_key.get(key)
            if memory is None:
                memory = self._by_key[key] = Memory(text, role, None)
            mention = Mention(event.ts_ms, event.event_id, event.session_id)
            if memory.exact_vector is False or memory.vector is None:
                vector = vectors.get(text)
                if vector is not None and np.size(vector) == self.dim:
                    memory.vector, memory.exact_vector = _unit(vector), True
                elif memory.vector is None or mention < memory.mentions[0]:
                    vector = vectors.get(event.text)
                    if vector is not None and np.size(vector) == self.dim:
                        memory.vector, memory.exact_vector = _unit(vector), False
            memory.mentions.append(mention)
            if len(memory.mentions) > 1 and mention < memory.mentions[-2]:
                memory.mentions.sort()
            self._ids.add(event.event_id)
            added += 1
        if len(self._ids) > self.spec.max_mentions:
            self._evict()
        self.changed = self.changed or added > 0
        return added

    def texts_to_embed(self, events: Iterable[Event]) -> list[str]:
        """The cleaned texts of ``events``' new messages whose memory has no vector yet: what to encode."""
        out: dict[str, None] = {}
        for event in events:
            if event.type != "message" or not event.text or event.event_id in self._ids:
                continue
            text = clean_text(event.text, self.spec.max_chars)
            memory = self._by_key.get((_role(event), text))
            if text and (memory is None or memory.vector is None or not memory.exact_vector):
                out[text] = None
        return list(out)

    def _evict(self) -> None:
        """Drop the least important mentions down to the bound (module docstring)."""
        spec = self.spec
        ranked = sorted(((importance(m.ts_ms, len(memory.text), spec), m.event_id), key)
                        for key, memory in self._by_key.items() for m in memory.mentions)  # fmt: skip
        drop = len(ranked) - spec.max_mentions
        gone: dict[tuple[str, str], set[str]] = {}
        for (_, event_id), key in ranked[:drop]:
            gone.setdefault(key, set()).add(event_id)
            self._ids.discard(event_id)
        for key, ids in gone.items():
            memory = self._by_key[key]
            memory.mentions = [m for m in memory.mentions if m.event_id not in ids]
            if not memory.mentions:
                del self._by_key[key]

    # --- read-outs -------------------------------------------------------------------------
    def memories(self) -> list[Memory]:
        """Every memory, in the order first said (time, then event id)."""
        return sorted(self._by_key.values(), key=lambda m: m.mentions[0])

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def mentions(self) -> int:
        """Number of kept mentions (≤ ``spec.max_mentions``)."""
        return len(self._ids)

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add_memory(self, memory: Memory) -> None:
        """Put a decoded memory back (:mod:`features.core.memory_codec`); no eviction, no checks beyond ids."""
        self._by_key[(memory.role, memory.text)] = memory
        self._ids.update(memory.event_ids)

    def snapshot(self) -> list[tuple]:
        """A comparable form of the whole set (tests: order independence)."""
        return [(m.role, m.text, tuple(m.mentions), None if m.vector is None else m.vector.round(5).tobytes())
                for m in self.memories()]  # fmt: skip


def _role(event: Event) -> str:
    role = (event.context or {}).get("role", "user")
    return role if role in ROLES else "user"
