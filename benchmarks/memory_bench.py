"""``p13n bench memory``: evidence recall of memory retrieval on generated conversations (``p13n eval
memory``, every retriever at 256/512/1024 tokens) and the memory stage's cost: one retrieval (decode the
stored memories, rank, pack into a budget) at N memories per user, and bytes per memory
(``python -m benchmarks.memory_bench [--memories 500]`` runs the stage timing alone).

The memories are the turns of generated conversations (:mod:`features.datasets.conversations`) made distinct
(a turn index appended), so none merge: the worst case for the bound. Timed closed-loop on one
thread, which is what the request path spends per request on the memory stage (not a latency
under load: that is ``p13n bench load``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from features.datasets.conversations import generate
from features.encoder.runtime import Encoder, default_encoder_dir
from features.core.events import Event
from features.core.memory import MemorySet, MemorySpec
from features.core.memory_codec import decode_columns, encode_memories
from features.evaluation.memory_recall import context_overhead, conversation_events
from features.core.memory_retrieval import MemoryTable, RetrievalSpec, pack, rank
from features.core.prompt import token_counter

__all__ = ["run", "run_memory", "memory_markdown", "memory_plot"]


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
    # the request path's counter (serving.app): it keeps the counts of the words of lines it counted
    count = token_counter(str(encoder.directory / encoder.meta.get("tokenizer", "tokenizer.json")), cache_size=100_000)
    max_tokens = budget - context_overhead(count)
    now_ms = events[-1].ts_ms + 60_000
    tokenizer = str(encoder.directory / encoder.meta.get("tokenizer", "tokenizer.json"))
    names = ("decode", "rank", "pack", "total", "pack, no count kept")
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    load = [os.getloadavg()[0]]
    for i in range(queries + 20):
        q, qv = questions[i % len(questions)], vectors[i % len(questions)]
        marks = [(time.perf_counter(), time.thread_time())]
        table = MemoryTable(decode_columns(blob, encoder.dimension))
        marks.append((time.perf_counter(), time.thread_time()))
        ranked, score = rank(table, q, qv, spec)
        marks.append((time.perf_counter(), time.thread_time()))
        pack(table, ranked, score, now_ms=now_ms, max_tokens=max_tokens, count_tokens=count, spec=spec)
        marks.append((time.perf_counter(), time.thread_time()))
        cold = token_counter(tokenizer, cache_size=100_000)  # a process that never counted these words
        marks.append((time.perf_counter(), time.thread_time()))
        pack(table, ranked, score, now_ms=now_ms, max_tokens=max_tokens, count_tokens=cold, spec=spec)
        marks.append((time.perf_counter(), time.thread_time()))
        if i >= 20:  # warm-up
            spans = {"decode": (0, 1), "rank": (1, 2), "pack": (2, 3), "total": (0, 3), "pack, no count kept": (4, 5)}
            for name, (a, b) in spans.items():
                wall[name].append((marks[b][0] - marks[a][0]) * 1000)
                cpu[name].append((marks[b][1] - marks[a][1]) * 1000)
    load.append(os.getloadavg()[0])

    def pct(values: list[float]) -> dict:
        return {"p50": round(float(np.percentile(values, 50)), 3), "p99": round(float(np.percentile(values, 99)), 3)}

    return {
        "memories": len(mem), "vector_type": vector_type, "budget_tokens": budget, "queries": queries,
        "bytes_per_memory": round(len(blob) / len(mem), 1), "bytes_total": len(blob),
        "ms": {name: pct(v) for name, v in wall.items()}, "cpu_ms": {name: pct(v) for name, v in cpu.items()},
        "loadavg_1min": load,
    }  # fmt: skip


def run_memory(quick: bool = False) -> dict:
    """The eval on 5 generated conversations (2 when ``quick``) and the stage timing at 500 memories."""
    from features.evaluation.memory_recall import evaluate_memory

    encoder = Encoder.from_directory(default_encoder_dir())
    convs = generate(2 if quick else 5, seed=0)
    count = token_counter(str(encoder.directory / encoder.meta.get("tokenizer", "tokenizer.json")), cache_size=100_000)
    result = evaluate_memory(convs, encoder.encode, count, dim=encoder.dimension)
    return {"eval": result.to_json(), "stage": run(500, 50 if quick else 300), "quick": quick,
            "dataset": f"{len(convs)} generated conversations (features.datasets.conversations, seed 0)"}  # fmt: skip


def memory_plot(result: dict, directory) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    retrievers = result["eval"]["retrievers"]
    budgets = [k.split("@")[1] for k in next(iter(retrievers.values()))]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(retrievers)
    for n, (name, row) in enumerate(retrievers.items()):
        ax.bar([i + n * width for i in range(len(budgets))], list(row.values()), width,
               label=name if name != "recent" else "last-N turns")  # fmt: skip
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(budgets))], [f"{b} tokens" for b in budgets])
    ax.set_ylabel("evidence recall")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Memory retrieval on generated conversations")
    fig.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "memory_recall.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def memory_markdown(result: dict, images: list = ()) -> str:
    from benchmarks.report import machine_line, markdown_table

    ev, stage = result["eval"], result["stage"]
    retrievers = ev["retrievers"]
    best = {b: max(row[b] for name, row in retrievers.items() if name != "fused") for b in retrievers["fused"]}
    rows = [[name if name != "recent" else "last-N turns", *(f"{v:.3f}" for v in row.values())]
            for name, row in retrievers.items()]  # fmt: skip
    rows.append(["fused ÷ best baseline", *(f"{retrievers['fused'][b] / best[b]:.2f}" if best[b] else "n/a" for b in best)])
    lines = ["## Conversational memory (`p13n bench memory`)", "", machine_line(result), "",
             f"Evidence recall on {result['dataset']}: {ev['questions']} questions of categories 1–4, "
             f"{ev['evidence_turns']} evidence turns, {ev['turns']} turns → {ev['memories']} memories "
             f"({ev['bytes_per_memory']} B each, int8 vectors; repeated small talk merges). Generated data plants "
             "the signal the retrievers find: this compares them on equal terms, it is no quality claim.", "",
             markdown_table(["retriever", *(b.replace("recall@", "@") + " tokens" for b in retrievers["fused"])], rows), "",
             f"Memory stage at {stage['memories']} distinct memories ({stage['bytes_per_memory']} B each), one thread, "
             f"{stage['queries']} queries, packing into {stage['budget_tokens']} tokens with the request path's token "
             "counter (it keeps the counts of words it counted; the last row: a counter that never counted them). "
             "Wall time and the thread's CPU time; the 1-minute load average was "
             f"{' → '.join(f'{x:.1f}' for x in stage.get('loadavg_1min', []))} on the 2 cores:", "",
             markdown_table(["stage", "p50 ms", "p99 ms", "CPU p50 ms", "CPU p99 ms"],
                            [[k, v["p50"], v["p99"], stage.get("cpu_ms", {}).get(k, {}).get("p50", ""),
                              stage.get("cpu_ms", {}).get(k, {}).get("p99", "")] for k, v in stage["ms"].items()]),
             ""]  # fmt: skip
    lines += [f"![{p.stem}](plots/{p.name})" for p in images]
    return "\n".join(lines)


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
