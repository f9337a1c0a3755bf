"""``p13n eval memory``: evidence recall of memory retrieval on multi-session conversations.

Input (:func:`load_conversations`): one conversation object (``speaker_a``, ``speaker_b``,
``session_<n>`` turn lists, ``session_<n>_date_time``, ``qa``; see :mod:`features.datasets.conversations`),
a list of them, or items that hold it under ``conversation`` with ``qa`` beside it.

Each conversation is one user: every turn is a ``message`` event (text ``"Speaker: words"``,
``event_id`` = its ``dia_id``, ``session_id`` = ``session_<n>``, event time = the session's date
in UTC + 30 s × the turn's index in the session), folded by the very code the consumer runs
(:meth:`~features.core.memory.MemorySet.fold` with the encoder's vectors of the cleaned texts), written and read
back through :mod:`features.core.memory_codec`. Questions are asked one minute after the last turn.

Metric: evidence recall, micro-averaged — over all questions of categories 1–4 with evidence, the
share of evidence turns whose id is among the ``event_ids`` of the memories placed into the context,
at each ``max_context_tokens`` (the whole ``<user_context>`` block counted by the prompt tokenizer,
as ``/v1/rewrite`` would build it with memories alone). Every retriever of
:data:`~features.core.memory_retrieval.MODES` runs on the same questions: ``fused`` beside ``bm25``,
``dense`` and ``recent`` (the last turns that fit: the last-N baseline).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from features.core.events import Event
from features.core.memory import MemorySet, MemorySpec
from features.core.memory_codec import decode_columns, encode_memories
from features.core.memory_retrieval import MODES, MemoryTable, RetrievalSpec, rank, pack
from features.core.prompt import HEADER

__all__ = ["load_conversations", "conversation_events", "parse_session_date", "evaluate_memory", "MemoryEvalResult",
           "BUDGETS", "context_overhead"]  # fmt: skip

BUDGETS = (256, 512, 1024)
TURN_SPACING_MS = 30_000
_SESSION = re.compile(r"^session_(\d+)$")


def load_conversations(path: Path) -> list[dict]:
    """The conversations of a JSON file (module docstring); raises ``ValueError`` naming what is wrong."""
    data = json.loads(Path(path).read_text())
    items = data if isinstance(data, list) else [data]
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: item {n} is not an object")
        conv = dict(item["conversation"], qa=item.get("qa", [])) if isinstance(item.get("conversation"), dict) else item
        if not any(_SESSION.match(k) for k in conv):
            raise ValueError(f"{path}: item {n} has no session_<n> turn list")
        out.append(conv)
    return out


def parse_session_date(text: str) -> datetime:
    """A session's ``date_time`` (``"1:56 pm on 8 May, 2023"``) as a UTC datetime.

    >>> parse_session_date("1:56 pm on 8 May, 2023").isoformat()
    '2023-05-08T13:56:00+00:00'
    """
    cleaned = " ".join(text.replace(",", " ").split())
    for fmt in ("%I:%M %p on %d %B %Y", "%I:%M %p on %d %b %Y"):
        try:
            return datetime.strptime(cleaned, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ValueError(f"unreadable session date {text!r} (expected like '1:56 pm on 8 May, 2023')")


def conversation_events(conv: dict, user_id: str) -> list[Event]:
    """The conversation's turns as ``message`` events of ``user_id`` (module docstring)."""
    events = []
    for key in sorted((k for k in conv if _SESSION.match(k)), key=lambda k: int(k.split("_")[1])):
        turns = conv[key]
        if not isinstance(turns, list) or not turns:
            continue
        start = parse_session_date(conv[f"{key}_date_time"])
        for index, turn in enumerate(turns):
            text = str(turn.get("text") or "").strip()
            if not text:
                continue
            ts = start + timedelta(milliseconds=TURN_SPACING_MS * index)
            said = f"{turn.get('speaker', '?')}: {text}"
            events.append(Event(event_id=str(turn["dia_id"]), user_id=user_id, type="message", session_id=key,
                                ts_ms=int(ts.timestamp() * 1000), text=said))
    return events


def _evidence(qa: dict) -> list[str]:
    ids: list[str] = []
    for entry in qa.get("evidence") or []:
        ids += [part.strip() for part in re.split(r"[;,]", str(entry)) if part.strip()]
    return list(dict.fromkeys(ids))


def context_overhead(count_tokens: Callable[[str], int]) -> int:
    """Tokens of the ``<user_context>`` wrapper and header a rewritten prompt spends before any section."""
    return count_tokens("\n".join(["<user_context>", HEADER])) + count_tokens("</user_context>") + 2


@dataclass
class MemoryEvalResult:
    """Recall per retriever and budget, and what the memories cost."""

    recall: dict[str, dict[int, float]] = field(default_factory=dict)
    questions: int = 0
    evidence: int = 0
    conversations: int = 0
    turns: int = 0
    memories: int = 0
    memory_bytes: int = 0
    query_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "retrievers": {mode: {f"recall@{b}": round(r, 4) for b, r in rows.items()}
                           for mode, rows in self.recall.items()},
            "questions": self.questions, "evidence_turns": self.evidence, "conversations": self.conversations,
            "turns": self.turns, "memories": self.memories,
            "bytes_per_memory": round(self.memory_bytes / self.memories, 1) if self.memories else None,
            "retrieval_ms": self.query_ms,
        }  # fmt: skip


def evaluate_memory(
    conversations: Sequence[dict],
    encode: Callable[[Sequence[str]], np.ndarray],
    count_tokens: Callable[[str], int],
    *,
    dim: int,
    budgets: Sequence[int] = BUDGETS,
    spec: MemorySpec | None = None,
    retrieval: RetrievalSpec | None = None,
    modes: Sequence[str] = MODES,
    vector_type: str = "i8",
) -> MemoryEvalResult:
    """Evidence recall of each retriever in ``modes`` at each budget (module docstring)."""
    spec = spec or MemorySpec()
    retrieval = retrieval or RetrievalSpec()
    overhead = context_overhead(count_tokens)
    hits = {mode: {b: 0 for b in budgets} for mode in modes}
    result = MemoryEvalResult(conversations=len(conversations))
    timings: list[float] = []
    for n, conv in enumerate(conversations):
        events = conversation_events(conv, f"conversation-{n}")
        memories = MemorySet(spec, dim)
        texts = memories.texts_to_embed(events)
        vectors = dict(zip(texts, encode(texts))) if texts else {}
        memories.fold(events, vectors)
        blob = encode_memories(memories, vector_type)
        table = MemoryTable(decode_columns(blob, dim))
        result.turns += len(events)
        result.memories += len(memories)
        result.memory_bytes += len(blob)
        now_ms = max(e.ts_ms for e in events) + 60_000 if events else 0
        questions = [q for q in conv.get("qa", []) if q.get("category") in (1, 2, 3, 4) and _evidence(q)]
        query_vectors = encode([str(q["question"]) for q in questions]) if questions else []
        for qa, qv in zip(questions, query_vectors):
            wanted = set(_evidence(qa))
            result.questions += 1
            result.evidence += len(wanted)
            for mode in modes:
                started = time.perf_counter()
                ranked, score = rank(table, str(qa["question"]), qv, retrieval, mode)
                ranked_ms = time.perf_counter() - started
                for budget in sorted(budgets):
                    started = time.perf_counter()
                    packed = pack(table, ranked, score, now_ms=now_ms, max_tokens=budget - overhead,
                                  count_tokens=count_tokens, spec=retrieval)  # fmt: skip
                    packed_ms = time.perf_counter() - started
                    found = {i for entry in packed.entries for i in entry["event_ids"]}
                    hits[mode][budget] += len(wanted & found)
                if mode == "fused":  # one retrieval: ranking and packing into the largest budget
                    timings.append((ranked_ms + packed_ms) * 1000)
    result.recall = {mode: {b: (h / result.evidence if result.evidence else 0.0) for b, h in rows.items()}
                     for mode, rows in hits.items()}  # fmt: skip
    if timings:
        result.query_ms = {f"p{q}": round(float(np.percentile(timings, q)), 3) for q in (50, 99)}
    return result
