"""Memory stage micro-benchmark: one retrieval (decode the stored memories, rank, pack into a budget) at
N memories per user, and bytes per memory — ``python -m benchmarks.memory_bench [--memories 500]``.

The memories are the turns of generated conversations (:mod:`features.conversations`) made distinct
(a turn index appended), so none merge: the worst case for the bound. Timed closed-loop on one
thread, which is what the request path spends per request on the memory stage (not a latency
under load: that is ``p13n bench load``).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from features.conversations import generate
from features.encoder import Encoder, default_encoder_dir
from features.events import Event
from features.memory import MemorySet, MemorySpec
from features.memory_codec import decode_columns, encode_memories
from features.memory_eval import context_overhead, conversation_events
from features.memory_retrieval import MemoryTable, RetrievalSpec, pack, rank

__all__ = ["run"]


def run(memories: int = 500, queries: int = 300, budget: int = 1024, vector_type: str = "i8") -> dict:
    encoder = Encoder.from_directory(default_encoder_dir())
    convs = generate(3, seed=42)
    events: list[Event] = []
    for conv in convs:
        for e in conversation_events(conv, "u"):
            events.append(Event(event_id=f"{len(events)}", user_id="u", type="message", ts_ms=e.ts_ms + len(events),
                                session_id=e.session_id, text=f"{e.text} ({len(events)})"))  # fmt: skip
    events = events[:memories]
    mem = MemorySet(MemorySpec(), encoder.dimension)
    texts = mem.texts_to_embed(events)
    mem.fold(events, dict(zip(texts, encoder.encode(texts))))
    blob = encode_memories(mem, vector_type)
    questions = [q["question"] for c in convs for q in c["qa"]]
    vectors = encoder.encode(questions)
    spec = RetrievalSpec()
    max_tokens = budget - context_overhead(encoder.count_tokens)
    now_ms = events[-1].ts_ms + 60_000
    stages: dict[str, list[float]] = {"decode": [], "rank": [], "pack": [], "total": []}
    for i in range(queries + 20):
        q, qv = questions[i % len(questions)], vectors[i % len(questions)]
        t0 = time.perf_counter()
        table = MemoryTable(decode_columns(blob, encoder.dimension))
        t1 = time.perf_counter()
        ranked, score = rank(table, q, qv, spec)
        t2 = time.perf_counter()
        pack(table, ranked, score, now_ms=now_ms, max_tokens=max_tokens, count_tokens=encoder.count_tokens, spec=spec)
        t3 = time.perf_counter()
        if i >= 20:  # warm-up
            for name, ms in (("decode", t1 - t0), ("rank", t2 - t1), ("pack", t3 - t2), ("total", t3 - t0)):
                stages[name].append(ms * 1000)
    return {
        "memories": len(mem), "vector_type": vector_type, "budget_tokens": budget, "queries": queries,
        "bytes_per_memory": round(len(blob) / len(mem), 1), "bytes_total": len(blob),
        "ms": {name: {"p50": round(float(np.percentile(v, 50)), 3), "p99": round(float(np.percentile(v, 99)), 3)}
               for name, v in stages.items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=500)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--vector-type", choices=("i8", "f2"), default="i8")
    args = parser.parse_args()
    print(json.dumps(run(args.memories, args.queries, args.budget, args.vector_type), indent=1))


if __name__ == "__main__":
    main()
