"""Retrieve a user's memories for a query and pack them into a token budget.

Ranking (:func:`rank`): BM25 over the memories' texts (:mod:`features.core.bm25`) and the cosine of the
query's vector with theirs each rank the memories; the best ``lexical_depth`` (20) of the BM25 list and
the best ``dense_depth`` (40) of the dense list are fused by weighted reciprocal-rank fusion,
``Σ wᵢ / (k + rankᵢ)`` with ``k = 30``, ``w = 0.5`` for BM25 and 1 for dense. A memory absent from a
list gets nothing from it, and:

- a BM25 hit must share with the query a term found in at most ``common_cutoff`` (10%) of the
  memories (Lucene's common-terms rule): a speaker's name, in every turn they said, is no reason to
  recall a turn;
- the lists are cut (a BM25 list of every memory sharing a word lets weak matches crowd out strong
  ones: recall at 256 tokens on the synthetic set 0.64 fusing the best 20 of each list, 0.51 fusing
  all), but the dense list deeper than the lexical one: when the budget holds 25 memories or more (1024
  tokens), fusing only the best 20 of each list filled the rest of it with BM25's weak matches and fell
  behind dense alone (0.76 against 0.93 on the reported set, seed 0);
- BM25 counts half as much as dense: equal weights put a BM25 match on one rare word (the "city" of
  "I visited Krakow, nice city" for "Which city is her home?") level with the dense list's best.
  The weights, ``k`` and depths were chosen by ``p13n eval memory`` on a validation set of generated
  conversations (``p13n synth-memory --seed 100``, not the reported seed 0), maximizing the smallest ratio
  of fused recall to the best single retriever over 256/512/1024 tokens (grid k ∈ {10, 20, 30, 60},
  BM25 weight ∈ {0.5, 0.75, 1}, depths 3–20 and 20/40/all; at k = 30, 0.5, 20/40: 0.650 / 0.800 /
  0.963 against dense 0.613 / 0.800 / 0.963; before, at k = 60, 1, 20/20: 0.625 / 0.788 / 0.875);
- every list breaks ties newest first, so of two equally relevant memories the newer wins — a fact
  updated later outranks its old value. A recency list of its own can join the fusion
  (``recency_weight``; off, since 0.2 cost recall at every budget of the synthetic set).

``mode`` picks one retriever alone, as it is (the baselines ``p13n eval memory`` reports): ``bm25``,
``dense``, ``recent``.

Packing (:func:`pack`): memories are taken best first while their rendered lines fit the budget;
then, while the budget allows, the hits' *neighbouring turns* (the memories said just before and
just after a hit in the same session, best hit first) — the answer to a question is often the other
speaker's reply, or the question the hit answers. ``neighbour_hits`` > 0 brings the best
hits' neighbours along at once, before weaker hits (on the synthetic set that cost recall at every
budget: 0.86 → 0.79 at 1024 tokens with 3). A memory whose vector is nearly the same as one already
taken (cosine ≥ ``dedup_cosine``) is not shown again: its event ids join the taken one's. The
lines are then put in the order they were said, each with its date — absolute (UTC) and relative to
``now`` — so an LLM can answer "when" questions ("yesterday", said on 8 May 2023, is 7 May 2023).

Every line is counted with the prompt's tokenizer, newline included, so the block never exceeds the
budget (the request path's counter, :class:`features.core.prompt.TokenCounter`, sums the kept counts of a
line's words when the tokenizer never makes a token across a space, as BERT's does: the same count,
without calling the tokenizer on every line); what users wrote is quoted by
:func:`features.core.prompt.sanitize` (control characters stripped, ``<``/``>`` escaped) and stays data, never
instructions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from features.core.bm25 import Corpus
from features.core.memory import MemorySet
from features.core.memory_codec import Columns
from features.core.prompt import sanitize

__all__ = ["RetrievalSpec", "MemoryTable", "PackedMemories", "rank", "pack", "retrieve", "render_line", "MODES",
           "TITLE"]

MODES = ("fused", "bm25", "dense", "recent")
TITLE = "What the user said earlier (quoted, with when it was said; oldest first):"


@dataclass(frozen=True)
class RetrievalSpec:
    """Knobs of ranking and packing (module docstring); the defaults are what ``p13n eval memory`` chose."""

    rrf_k: float = 30.0
    common_cutoff: float = 0.1  # a query term in more than this share of memories cannot alone make a BM25 hit
    lexical_depth: int = 20  # the fusion takes BM25's best this many rows (0: all)
    dense_depth: int = 40  # the fusion takes the dense list's best this many rows (0: all)
    lexical_weight: float = 0.5
    dense_weight: float = 1.0
    recency_weight: float = 0.0  # measured: 0.2 cost recall on every budget of the synthetic set
    neighbour_hits: int = 0  # the best this many hits bring their neighbouring turns at once (others: if room)
    neighbour_gap_ms: int = 30 * 60_000  # turns further apart than this are not neighbours
    dedup_cosine: float = 0.95
    max_chars: int = 480  # of a quoted memory in the prompt


class MemoryTable:
    """A user's memories as columns, first said first: what retrieval reads."""

    def __init__(self, cols: Columns) -> None:
        self.cols = cols
        self.texts = cols.texts
        self.roles = cols.roles
        self.vectors = cols.vectors
        self.has_vector = cols.has_vector
        self.corpus = Corpus(cols.terms, cols.term_offsets)
        starts = cols.mention_offsets
        self.first_ms = cols.mention_ts[starts[:-1]] if len(starts) > 1 else np.zeros(0, np.int64)
        self.last_ms = cols.mention_ts[starts[1:] - 1] if len(starts) > 1 else np.zeros(0, np.int64)
        self._timeline: tuple[np.ndarray, ...] | None = None

    @classmethod
    def from_set(cls, memories: MemorySet) -> MemoryTable:
        rows = memories.memories()
        dim = memories.dim
        vectors = np.zeros((len(rows), dim), dtype=np.float32)
        has = np.zeros(len(rows), dtype=bool)
        for i, m in enumerate(rows):
            if m.vector is not None:
                vectors[i], has[i] = m.vector, True
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(m.terms) for m in rows], out=offsets[1:])
        terms = np.concatenate([m.terms for m in rows]) if rows else np.zeros(0, np.uint32)
        exact = np.array([m.exact_vector for m in rows], dtype=bool)
        flat = [x for m in rows for x in m.mentions]
        names = list(dict.fromkeys(x.session_id for x in flat if x.session_id is not None))
        place = {name: i for i, name in enumerate(names)}
        starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum([len(m.mentions) for m in rows], out=starts[1:])
        return cls(Columns([m.text for m in rows], [m.role for m in rows], vectors, has, terms, offsets, exact, starts,
                           np.array([x.ts_ms for x in flat], dtype=np.int64), [x.event_id for x in flat],
                           np.array([place.get(x.session_id, -1) for x in flat], dtype=np.int32), names))  # fmt: skip

    def __len__(self) -> int:
        return len(self.texts)

    def event_ids(self, row: int) -> list[str]:
        """Every mention's event id of ``row``, oldest first."""
        starts = self.cols.mention_offsets
        return self.cols.event_ids[int(starts[row]) : int(starts[row + 1])]

    def last_event_id(self, row: int) -> str:
        """The event id of ``row``'s latest mention."""
        return self.cols.event_ids[int(self.cols.mention_offsets[row + 1]) - 1]

    def neighbours(self, row: int, gap_ms: int) -> list[int]:
        """Rows said just before or after the latest mention of ``row`` in the same session, at most ``gap_ms``
        apart (a memory said many times — "thanks!" — is not a reason to show everything said around it)."""
        cols = self.cols
        starts = cols.mention_offsets
        if self._timeline is None:  # every mention in time order: (row, time, place of each mention)
            times = cols.mention_ts
            rows = np.repeat(np.arange(len(self)), np.diff(starts))
            order = np.lexsort((rows, times))
            place = np.empty_like(order)
            place[order] = np.arange(len(order))
            self._timeline = (rows[order], times[order], place)
        rows, times, place = self._timeline
        last = int(starts[row + 1]) - 1
        session = int(cols.mention_sessions[last])
        at = int(place[last])
        out: list[int] = []
        for other in (at - 1, at + 1):
            if 0 <= other < len(rows) and abs(int(times[other]) - int(times[at])) <= gap_ms:
                r = int(rows[other])
                if r != row and r not in out and session in cols.mention_sessions[starts[r] : starts[r + 1]]:
                    out.append(r)
        return out


def _rrf(order: np.ndarray, n: int, k: float, depth: int = 0) -> np.ndarray:
    """1 / (k + rank) for the rows in ``order`` (rank 1 first; the first ``depth`` of them when > 0), 0 elsewhere."""
    out = np.zeros(n, dtype=np.float64)
    order = order[:depth] if depth > 0 else order
    out[order] = 1.0 / (k + np.arange(1, len(order) + 1))
    return out


def rank(table: MemoryTable, query: str, query_vector: np.ndarray | None, spec: RetrievalSpec,
         mode: str = "fused") -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(rows best first, score per row). Rows a retriever cannot rank (no shared term, no vector) are
    left out of its list; ``recent`` ranks every row."""
    n = len(table)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if mode == "recent":
        recent = np.lexsort((-np.arange(n), -table.last_ms))  # newest first
        return recent, _rrf(recent, n, spec.rrf_k)
    fused = mode == "fused"
    relevance = np.zeros(n, dtype=np.float64)
    if mode in ("fused", "bm25"):
        lexical = table.corpus.scores(query)
        hits = np.flatnonzero(lexical > 0)
        if fused:  # the baseline is BM25 as it is
            hits = hits[table.corpus.rare_matches(query, spec.common_cutoff)[hits]]
        order = hits[np.lexsort((-table.last_ms[hits], -lexical[hits]))]  # ties: the newer first
        weight, depth = (spec.lexical_weight, spec.lexical_depth) if fused else (1.0, 0)
        relevance += weight * _rrf(order, n, spec.rrf_k, depth)
    if mode in ("fused", "dense") and query_vector is not None:
        cos = table.vectors @ np.asarray(query_vector, dtype=np.float32)
        rows = np.flatnonzero(table.has_vector)
        order = rows[np.lexsort((-table.last_ms[rows], -cos[rows]))]
        weight, depth = (spec.dense_weight, spec.dense_depth) if fused else (1.0, 0)
        relevance += weight * _rrf(order, n, spec.rrf_k, depth)
    ranked = np.flatnonzero(relevance > 0)  # recency alone does not make a memory relevant
    score = relevance
    if fused and spec.recency_weight:
        score = relevance + spec.recency_weight * _rrf(np.lexsort((-np.arange(n), -table.last_ms)), n, spec.rrf_k)
    ranked = ranked[np.lexsort((ranked, -score[ranked]))]
    return ranked, score


def _ago(ms: int) -> str:
    """A coarse relative time.

    >>> _ago(90_000), _ago(5 * 3_600_000), _ago(3 * 86_400_000), _ago(40 * 86_400_000), _ago(800 * 86_400_000)
    ('2 min ago', '5 h ago', '3 days ago', '6 weeks ago', '2.2 years ago')
    """
    minutes = max(0, ms) / 60_000
    if minutes < 90:
        return f"{minutes:.0f} min ago"
    hours = minutes / 60
    if hours < 36:
        return f"{hours:.0f} h ago"
    days = hours / 24
    if days < 14:
        return f"{days:.0f} days ago"
    if days < 120:
        return f"{days / 7:.0f} weeks ago"
    if days < 730:
        return f"{days / 30.44:.0f} months ago"
    return f"{days / 365.25:.1f} years ago"


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")  # fmt: skip


def render_line(text: str, ts_ms: int, now_ms: int, max_chars: int) -> str:
    """One memory as a prompt line: date said (UTC), how long ago, the quoted text.

    >>> render_line("Caroline: I went to a support group yesterday", 1683554160000, 1683554160000 + 2 * 86_400_000, 200)
    '- 8 May 2023, 13:56 UTC (2 days ago): "Caroline: I went to a support group yesterday"'
    """
    when = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return (f"- {when.day} {_MONTHS[when.month - 1]} {when.year}, {when.hour:02d}:{when.minute:02d} UTC "
            f"({_ago(now_ms - ts_ms)}): {sanitize(text, max_chars)}")


@dataclass
class PackedMemories:
    """Memories placed into a budget: ``entries`` in prompt order (``context.memories``), ``lines``
    their rendered lines (title first), ``tokens`` spent including the title."""

    entries: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    tokens: int = 0


class _Placement:
    """The rows taken so far into one budget, and what they cost: :func:`pack`'s working state.

    ``taken`` maps a row to the score shown for it, a merged near-duplicate included; ``rows`` are the rows
    shown (in the order taken), ``merged`` the near-duplicates each shown row absorbed; ``used`` counts
    tokens, the title's included."""

    def __init__(self, table: MemoryTable, *, now_ms: int, max_tokens: int, count_tokens: Callable[[str], int],
                 spec: RetrievalSpec) -> None:  # fmt: skip
        self.table = table
        self.now_ms = now_ms
        self.max_tokens = max_tokens
        self.count_tokens = count_tokens
        self.spec = spec
        self.used = count_tokens(TITLE) + 1
        self.taken: dict[int, float] = {}  # row -> score shown
        self.merged: dict[int, list[int]] = {}  # taken row -> rows merged into it
        self.rows: list[int] = []
        self.vectors = np.zeros((max(1, min(len(table), 64)), table.vectors.shape[1]), dtype=np.float32)
        self.lines: dict[int, str] = {}
        self.costs: dict[int, int] = {}

    def take(self, row: int, shown: float) -> bool:
        """Take ``row`` (or merge it into the taken row it nearly repeats); False when its line does not fit."""
        if row in self.taken:
            return True
        table, rows = self.table, self.rows
        if rows and table.has_vector[row]:
            cos = self.vectors[: len(rows)] @ table.vectors[row]
            best = int(cos.argmax())
            if cos[best] >= self.spec.dedup_cosine and table.has_vector[rows[best]]:
                self.merged.setdefault(rows[best], []).append(row)
                self.taken[row] = shown
                return True
        if row in self.costs:  # tried before and did not fit
            return False
        line = render_line(table.texts[row], int(table.last_ms[row]), self.now_ms, self.spec.max_chars)
        self.lines[row] = line
        cost = self.costs[row] = self.count_tokens(line) + 1
        if self.used + cost > self.max_tokens:
            return False
        self.used += cost
        self.taken[row] = shown
        if len(rows) == len(self.vectors):
            self.vectors = np.concatenate([self.vectors, np.zeros_like(self.vectors)])
        self.vectors[len(rows)] = table.vectors[row]
        rows.append(row)
        return True

    def take_neighbours(self, row: int) -> None:
        for other in self.table.neighbours(row, self.spec.neighbour_gap_ms):
            self.take(other, 0.0)

    def packed(self) -> PackedMemories:
        """The taken rows in the order they were said, title first (nothing when no row was taken)."""
        out = PackedMemories()
        if not self.rows:
            return out
        table = self.table
        out.lines.append(TITLE)
        for row in sorted(self.rows, key=lambda r: (int(table.last_ms[r]), r)):
            ids = table.event_ids(row)
            for other in self.merged.get(row, []):
                ids += table.event_ids(other)
            out.lines.append(self.lines[row])
            out.entries.append({"event_id": table.last_event_id(row), "event_ids": ids, "text": table.texts[row],
                                "timestamp": int(table.last_ms[row]), "score": round(self.taken[row], 6)})  # fmt: skip
        out.tokens = self.used
        return out


def pack(table: MemoryTable, ranked: np.ndarray, score: np.ndarray, *, now_ms: int, max_tokens: int,
         count_tokens: Callable[[str], int], spec: RetrievalSpec) -> PackedMemories:  # fmt: skip
    """Place ``ranked`` rows (best first) into ``max_tokens`` (module docstring). Returns nothing when not
    even the title and one memory fit."""
    place = _Placement(table, now_ms=now_ms, max_tokens=max_tokens, count_tokens=count_tokens, spec=spec)
    hits: list[int] = []
    misses = 0
    for row in ranked.tolist():
        if row in place.taken:
            continue
        if not place.take(row, float(score[row])):
            misses += 1
            if misses >= 4 or max_tokens - place.used < 16:
                break
            continue
        hits.append(row)
        if len(hits) <= spec.neighbour_hits:  # the best hits bring their context at once
            place.take_neighbours(row)
    smallest = min(place.costs.values(), default=1)
    for row in hits[spec.neighbour_hits :]:  # then, while the budget allows, the others' neighbours
        if max_tokens - place.used < max(16, smallest):
            break
        place.take_neighbours(row)
    return place.packed()


def retrieve(table: MemoryTable, query: str, query_vector: np.ndarray | None, *, now_ms: int, max_tokens: int,
             count_tokens: Callable[[str], int], spec: RetrievalSpec | None = None,
             mode: str = "fused") -> PackedMemories:  # fmt: skip
    """:func:`rank` then :func:`pack`; ``mode`` as in :func:`rank`."""
    spec = spec or RetrievalSpec()
    ranked, score = rank(table, query, query_vector, spec, mode)
    return pack(table, ranked, score, now_ms=now_ms, max_tokens=max_tokens, count_tokens=count_tokens, spec=spec)
