"""Conversational memories: the fold's order independence and idempotence, the bound and eviction, the codec."""

from __future__ import annotations

import random

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.core.events import Event
from features.core.memory import MemorySet, MemorySpec, clean_text, importance
from features.core.memory_codec import MemoryFormatError, decode_memories, encode_memories

DIM = 8
DAY = 86_400_000
#: Raw texts; some clean to the same memory ("ok" / " ok\n" / "ok\x00"), which embed differently.
TEXTS = ["ok", " ok\n", "ok\x00", "I adopted a dog named Max", "We moved to Lisbon", "thanks!", "I love pottery",
         "My sister is a nurse at St. Mary's hospital and works nights"]  # fmt: skip
#: Vectors of the raw texts and of their cleaned forms (what the consumer encodes), all different.
VECTORS = {t: np.random.default_rng(i).standard_normal(DIM).astype(np.float32)
           for i, t in enumerate(dict.fromkeys(TEXTS + [clean_text(t, 480) for t in TEXTS]))}  # fmt: skip


def said(event_id: str, ts_ms: int, text: str, session: str | None = "s1", **extra) -> Event:
    return Event(event_id=event_id, user_id="u", type="message", ts_ms=ts_ms, text=text, session_id=session, **extra)


event_strategy = st.tuples(st.integers(0, 40), st.integers(0, 60 * DAY), st.sampled_from(TEXTS),
                           st.sampled_from(["s1", "s2"]))


def _events(rows) -> list[Event]:
    # an event id names one event: its time, text and session are functions of the id
    return [said(f"e{i}", ts, text, session) for i, ts, text, session in rows]


@settings(max_examples=60, deadline=None)
@given(st.lists(event_strategy, min_size=1, max_size=40, unique_by=lambda r: r[0]), st.integers(1, 12),
       st.randoms(use_true_random=False), st.sampled_from([0.0, 1.0]))  # fmt: skip
def test_the_same_events_in_any_order_and_batches_with_replays_give_the_same_memories(rows, bound, rnd, length_weight):
    spec = MemorySpec(max_mentions=bound, length_weight=length_weight)
    events = _events(rows)
    reference = MemorySet(spec, DIM)
    reference.fold(events, VECTORS)
    shuffled = events + rnd.sample(events, k=len(events) // 2)  # replays of some events
    rnd.shuffle(shuffled)
    other = MemorySet(spec, DIM)
    at = 0
    while at < len(shuffled):
        size = rnd.randint(1, 5)
        other.fold(shuffled[at : at + size], VECTORS)
        at += size
    assert other.snapshot() == reference.snapshot()
    assert other.mentions == reference.mentions == min(bound, len(events))


def test_an_event_folded_twice_counts_once():
    mem = MemorySet(MemorySpec(), DIM)
    assert mem.fold([said("e1", 1, "I love pottery")], VECTORS) == 1
    assert mem.fold([said("e1", 1, "I love pottery"), said("e1", 1, "I love pottery")], VECTORS) == 0
    assert [m.event_ids for m in mem.memories()] == [["e1"]]


def test_the_same_text_merges_into_one_memory_listing_every_event():
    mem = MemorySet(MemorySpec(), DIM)
    mem.fold([said("e2", 2 * DAY, " ok\n"), said("e1", DAY, "ok"), said("e3", 3 * DAY, "ok\x00", session="s2")],
             VECTORS)
    (memory,) = mem.memories()
    assert (memory.text, memory.event_ids, memory.first_ms, memory.last_ms) == ("ok", ["e1", "e2", "e3"], DAY, 3 * DAY)
    expected = VECTORS["ok"] / np.linalg.norm(VECTORS["ok"])  # the cleaned text's vector, whatever the order
    np.testing.assert_allclose(memory.vector, expected, rtol=1e-6)
    raw_only = {" ok\n": VECTORS[" ok\n"], "ok\x00": VECTORS["ok\x00"]}
    mem = MemorySet(MemorySpec(), DIM)
    mem.fold([said("e3", 3 * DAY, "ok\x00"), said("e2", 2 * DAY, " ok\n")], raw_only)
    first = raw_only[" ok\n"]
    np.testing.assert_allclose(mem.memories()[0].vector, first / np.linalg.norm(first), rtol=1e-6)
    assert mem.texts_to_embed([said("e4", 4 * DAY, "ok ")]) == ["ok"]  # raw vectors are replaced when encoded


def test_other_types_and_roles_are_kept_apart():
    mem = MemorySet(MemorySpec(), DIM)
    mem.fold([Event(event_id="p", user_id="u", type="preference", ts_ms=1, text="I am vegan"),
              said("a", 2, "thanks!", context={"role": "assistant"}), said("b", 3, "thanks!"),
              said("c", 4, "thanks!", context={"role": "system"})], VECTORS)  # fmt: skip
    assert [(m.role, m.event_ids) for m in mem.memories()] == [("assistant", ["a"]), ("user", ["b", "c"])]


def test_eviction_by_recency_alone_drops_the_oldest():
    mem = MemorySet(MemorySpec(max_mentions=3, length_weight=0), DIM)
    mem.fold([said(f"e{n}", n * DAY, TEXTS[3 + n % 5] + f" {n}") for n in range(10)], VECTORS)
    assert mem.mentions == 3
    assert sorted(i for m in mem.memories() for i in m.event_ids) == ["e7", "e8", "e9"]


def test_eviction_keeps_a_long_turn_over_a_short_newer_one_as_documented():
    spec = MemorySpec(max_mentions=1)  # length_weight 1, tau 30 days
    long_text = "x" * 300
    # ln(1 + 3) vs ln(1 + 0.2): the long turn outlives short turns said up to 30·ln(4/1.2) ≈ 36 days later
    assert importance(0, 300, spec) > importance(35 * DAY, 20, spec)
    assert importance(0, 300, spec) < importance(37 * DAY, 20, spec)
    mem = MemorySet(spec, DIM)
    mem.fold([said("long", 0, long_text), said("short", 35 * DAY, "y" * 20)], {})
    assert [m.event_ids for m in mem.memories()] == [["long"]]
    mem.fold([said("later", 37 * DAY, "z" * 20)], {})
    assert [m.event_ids for m in mem.memories()] == [["later"]]


def test_a_memory_goes_with_its_last_mention_and_the_bound_holds_under_any_load():
    mem = MemorySet(MemorySpec(max_mentions=50, length_weight=0), DIM)
    rng = random.Random(3)
    for batch in range(20):
        mem.fold([said(f"b{batch}-{n}", rng.randrange(100 * DAY), rng.choice(TEXTS) + str(rng.randrange(30)))
                  for n in range(25)], VECTORS)  # fmt: skip
        assert mem.mentions <= 50
        assert sum(len(m.mentions) for m in mem.memories()) == mem.mentions
        assert all(m.mentions for m in mem.memories())


def test_text_is_cleaned_and_capped():
    assert clean_text("a\u202eb\x1b[31m c\u2028d", 100) == "ab [31m c d"
    assert len(clean_text("word " * 500, 480)) == 480
    with pytest.raises(ValueError, match="max_mentions"):
        MemorySpec(max_mentions=0)


def test_codec_round_trip_keeps_everything_but_float_rounding():
    mem = MemorySet(MemorySpec(), DIM)
    mem.fold([said("e0", 0, "only a raw vector ")], {"only a raw vector ": VECTORS["ok"]})
    mem.fold([said("e1", DAY, "I adopted a dog named Max"), said("e2", 2 * DAY, "ok", session=None),
              said("e3", 3 * DAY, " ok\n"), said("e4", 4 * DAY, "no vector for me")], VECTORS)  # fmt: skip
    for vector_type, tolerance in (("i8", 0.01), ("f2", 0.001)):
        back = decode_memories(encode_memories(mem, vector_type), MemorySpec(), DIM)
        rows = [(m.text, m.role, m.mentions) for m in mem.memories()]
        assert [(m.text, m.role, m.mentions) for m in back.memories()] == rows
        for a, b in zip(mem.memories(), back.memories()):
            assert (a.vector is None) == (b.vector is None)
            if a.vector is not None:
                assert float(a.vector @ b.vector) > 1 - tolerance
            np.testing.assert_array_equal(a.terms, b.terms)
        assert back.mentions == mem.mentions and "e3" in back
        assert [m.exact_vector for m in back.memories()] == [m.exact_vector for m in mem.memories()]


def test_codec_refuses_what_it_cannot_read():
    mem = MemorySet(MemorySpec(), DIM)
    mem.fold([said("e1", DAY, "I love pottery")], VECTORS)
    blob = encode_memories(mem)
    with pytest.raises(MemoryFormatError, match="dim=8"):
        decode_memories(blob, MemorySpec(), dim=4)
    with pytest.raises(MemoryFormatError, match="not readable"):
        decode_memories(blob[:-3], MemorySpec(), DIM)
    record = msgspec.msgpack.decode(blob)
    record[8] = [99]  # term counts that do not match the terms
    with pytest.raises(MemoryFormatError, match="terms"):
        decode_memories(msgspec.msgpack.encode(record), MemorySpec(), DIM)


def test_bytes_per_memory_stay_under_a_kilobyte_for_conversational_turns():
    dim = 384
    rng = np.random.default_rng(0)
    words = "we went to the lake yesterday and my sister brought her new puppy along it was lovely".split()
    texts = [" ".join(words[i % 5 :] + [str(i)]) for i in range(500)]  # ~80-100 characters, like chat turns
    mem = MemorySet(MemorySpec(), dim)
    mem.fold([said(f"D{i // 30}:{i % 30}", i * 30_000, t) for i, t in enumerate(texts)],
             {t: rng.standard_normal(dim) for t in texts})  # fmt: skip
    per_memory = len(encode_memories(mem, "i8")) / len(mem)
    assert per_memory < 600, per_memory  # 388 B vector + ~90 B text + terms and the mention
    assert len(encode_memories(mem, "f2")) / len(mem) < 1000
