"""Packing memories into a budget: the fast packer places exactly what the plain one does.

``plain_pack`` is the packer as first written (every line rendered and counted with the tokenizer when it
is tried, one call each); :func:`features.memory_retrieval.pack` must place the same memories, in the
same order, with the same lines, scores and token count, for every retriever, budget and neighbour rule.
"""

from __future__ import annotations

import functools

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.datasets.conversations import generate_conversation
from features.encoder.runtime import Encoder, default_encoder_dir
from features.core.events import Event
from features.core.memory import MemorySet, MemorySpec
from features.core.memory_codec import MemoryFormatError, decode_columns, decode_memories, encode_memories
from features.evaluation.memory_recall import conversation_events
from features.core.prompt import TokenCounter, token_counter
from features.core.memory_retrieval import (MODES, TITLE, MemoryTable, PackedMemories, RetrievalSpec, pack, rank,
                                           render_line)


def plain_pack(table: MemoryTable, ranked: np.ndarray, score: np.ndarray, *, now_ms: int, max_tokens: int,
               count_tokens, spec: RetrievalSpec) -> PackedMemories:  # fmt: skip
    out = PackedMemories()
    used = count_tokens(TITLE) + 1
    taken: dict[int, float] = {}
    merged: dict[int, list[int]] = {}
    taken_rows: list[int] = []
    lines: dict[int, str] = {}
    costs: dict[int, int] = {}
    misses = 0

    def take(row: int, shown: float) -> bool:
        nonlocal used
        if row in taken:
            return True
        if taken_rows and table.has_vector[row]:
            rows = np.array(taken_rows)
            cos = table.vectors[rows] @ table.vectors[row]
            best = int(np.argmax(cos))
            if cos[best] >= spec.dedup_cosine and table.has_vector[rows[best]]:
                merged.setdefault(int(rows[best]), []).append(row)
                taken[row] = shown
                return True
        if row in costs:
            return False
        line = lines[row] = render_line(table.texts[row], int(table.last_ms[row]), now_ms, spec.max_chars)
        cost = costs[row] = count_tokens(line) + 1
        if used + cost > max_tokens:
            return False
        used += cost
        taken[row] = shown
        taken_rows.append(row)
        return True

    hits: list[int] = []
    for row in ranked.tolist():
        if row in taken:
            continue
        if not take(row, float(score[row])):
            misses += 1
            if misses >= 4 or max_tokens - used < 16:
                break
            continue
        hits.append(row)
        if len(hits) <= spec.neighbour_hits:
            for other in table.neighbours(row, spec.neighbour_gap_ms):
                take(other, 0.0)
    smallest = min(costs.values(), default=1)
    for row in hits[spec.neighbour_hits :]:
        if max_tokens - used < max(16, smallest):
            break
        for other in table.neighbours(row, spec.neighbour_gap_ms):
            take(other, 0.0)
    if not taken_rows:
        return out
    out.lines.append(TITLE)
    for row in sorted(taken_rows, key=lambda r: (int(table.last_ms[r]), r)):
        ids = list(table.event_ids(row))
        for other in merged.get(row, []):
            ids += table.event_ids(other)
        out.lines.append(lines[row])
        out.entries.append({"event_id": table.event_ids(row)[-1], "event_ids": ids, "text": table.texts[row],
                            "timestamp": int(table.last_ms[row]), "score": round(taken[row], 6)})  # fmt: skip
    out.tokens = used
    return out


def serving_counter(encoder: Encoder) -> TokenCounter:
    """The counter ``serving.app`` builds for the encoder's tokenizer."""
    return token_counter(str(encoder.directory / encoder.meta.get("tokenizer", "tokenizer.json")), cache_size=100_000)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_directory(default_encoder_dir())


@pytest.fixture(scope="module")
def cases(encoder):
    """Two tables (a generated conversation as it merges, and its turns made distinct, as the benchmark
    does) with the conversation's questions and their vectors."""
    conv = generate_conversation(3, sessions=10, turns_per_session=24)
    events = conversation_events(conv, "u")
    distinct = [Event(event_id=e.event_id, user_id="u", type="message", ts_ms=e.ts_ms, session_id=e.session_id,
                      text=f"{e.text} ({n})") for n, e in enumerate(events)]  # fmt: skip
    tables = []
    for evs in (events, distinct):
        mem = MemorySet(MemorySpec(), encoder.dimension)
        texts = mem.texts_to_embed(evs)
        mem.fold(evs, dict(zip(texts, encoder.encode(texts))))
        tables.append((MemoryTable(decode_columns(encode_memories(mem), encoder.dimension)), evs[-1].ts_ms + 60_000))
    questions = [q["question"] for q in conv["qa"]][::2] + ["thanks, that sounds great", "", "Biscuit"]
    return tables, questions, encoder.encode(questions)


@pytest.mark.parametrize("spec", [RetrievalSpec(), RetrievalSpec(neighbour_hits=2), RetrievalSpec(dedup_cosine=0.6),
                                  RetrievalSpec(lexical_depth=0, dense_depth=0, max_chars=60)])  # fmt: skip
def test_the_packer_places_what_the_plain_packer_places(encoder, cases, spec):
    tables, questions, vectors = cases
    count = functools.lru_cache(maxsize=None)(encoder.count_tokens)
    served = serving_counter(encoder)  # counts lines word by word
    compared = 0
    for table, now_ms in tables:
        for question, vector in zip(questions, vectors):
            for mode in MODES:
                ranked, score = rank(table, question, vector, spec, mode)
                for budget in (40, 256, 1024, 4000):
                    kwargs = dict(now_ms=now_ms, max_tokens=budget, spec=spec)
                    fast = pack(table, ranked, score, count_tokens=served, **kwargs)
                    plain = plain_pack(table, ranked, score, count_tokens=count, **kwargs)
                    assert (fast.entries, fast.lines, fast.tokens) == (plain.entries, plain.lines, plain.tokens)
                    compared += bool(plain.entries)
    assert compared > 150


def test_memories_stored_in_the_first_format_read_the_same():
    mem = MemorySet(MemorySpec(), 4)
    rng = np.random.default_rng(1)
    events = [Event(event_id=f"e{i}", user_id="u", type="message", ts_ms=1000 * (i % 7), text=f"said {i % 5}",
                    session_id=[None, "s1", "s2"][i % 3]) for i in range(20)]  # fmt: skip
    mem.fold(events, {f"said {k}": rng.standard_normal(4) for k in range(5)})
    blob = encode_memories(mem)
    rows = mem.memories()
    mentions = [[[x.ts_ms, x.event_id, x.session_id] for x in m.mentions] for m in rows]
    first = msgspec.msgpack.encode([1, *msgspec.msgpack.decode(blob)[1:9], mentions])
    for got, want in zip(decode_columns(first, 4), decode_columns(blob, 4)):
        if isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
        else:
            assert got == want
    for data in (first, blob):
        back = decode_memories(data, MemorySpec(), 4).memories()
        assert [(m.text, m.mentions) for m in back] == [(m.text, m.mentions) for m in rows]
        assert any(x.session_id is None for m in back for x in m.mentions)
    with pytest.raises(MemoryFormatError, match="not readable"):
        decode_columns(msgspec.msgpack.encode([3, *msgspec.msgpack.decode(blob)[1:]]), 4)
    record = msgspec.msgpack.decode(blob)
    record[13] = np.array([0] * (len(record[11]) - 1) + [7], "<i4").tobytes()  # a session that is not listed
    with pytest.raises(MemoryFormatError, match="unknown session"):
        decode_columns(msgspec.msgpack.encode(record), 4)


HOSTILE = ["Ana: I adopted a dog named Max!", "naïve café — résumé 東京 ½ ﬁne Ǆ", "emoji 🐶🐕 and \u0301accent",
           'quotes "inside" and \\ backslash <b>tags</b>', "a" * 150, "x\u00a0y\u3000z\u2028w\tv", "\ufffd\x00bad"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(HOSTILE) | st.text(max_size=40), min_size=1, max_size=4).map(" ".join))
def test_counting_word_by_word_equals_counting_the_line(text):
    counter, encoder = _counter_and_encoder()
    assert counter.additive
    line = render_line(text, 1_683_554_160_000, 1_700_000_000_000, 480)
    assert counter(line) == encoder.count_tokens(line)
    assert counter(text) == encoder.count_tokens(text)  # any text: other whitespace stays inside a chunk


@functools.cache
def _counter_and_encoder() -> tuple[TokenCounter, Encoder]:
    encoder = Encoder.from_directory(default_encoder_dir())
    return serving_counter(encoder), encoder
