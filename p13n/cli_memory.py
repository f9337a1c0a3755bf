"""``p13n eval memory FILE.json`` (also spelled ``p13n eval-memory``) and ``p13n synth-memory OUT.json``.

``eval`` takes an event log as its positional argument, so ``eval memory`` is routed here by
:func:`route` before argparse sees it: ``p13n eval memory X`` is ``p13n eval-memory X``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from p13n.config import Config
from p13n.errors import ConfigError

__all__ = ["register", "route"]


#: Knobs of the fused retriever that ``eval-memory`` can set (:class:`features.memory_retrieval.RetrievalSpec`).
_KNOBS = {"rrf_k": float, "lexical_weight": float, "dense_weight": float, "lexical_depth": int, "dense_depth": int,
          "neighbour_hits": int}  # fmt: skip


def _budget(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 64:
        raise argparse.ArgumentTypeError(f"a context budget below 64 tokens holds no memory, got {text!r}")
    return value


def route(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``eval memory …`` spelled ``eval-memory …`` (the options before the command kept).

    >>> route(["--config", "x.toml", "eval", "memory", "c.json"])
    ['--config', 'x.toml', 'eval-memory', 'c.json']
    >>> route(["eval", "events.jsonl"])
    ['eval', 'events.jsonl']
    """
    argv = list(argv)
    for i, word in enumerate(argv):
        if word == "eval":
            if argv[i + 1 : i + 2] == ["memory"]:
                return argv[:i] + ["eval-memory"] + argv[i + 2 :]
            break
        if not word.startswith("-") and (i == 0 or argv[i - 1] != "--config"):
            break
    return argv


def register(sub) -> None:
    """Add ``eval-memory`` and ``synth-memory`` to the ``p13n`` subparsers ``sub``."""
    evaluate = sub.add_parser("eval-memory", help="evidence recall of memory retrieval (also: `p13n eval memory FILE`)")
    evaluate.add_argument("file", type=Path, metavar="FILE.json", help="conversations with questions (LoCoMo-like)")
    evaluate.add_argument("--budgets", type=_budget, nargs="+", default=[256, 512, 1024], metavar="TOKENS",
                          help="max_context_tokens to evaluate at (256 512 1024)")  # fmt: skip
    evaluate.add_argument("--max-mentions", type=int, default=None, help="memory bound per user (default: the spec's)")
    evaluate.add_argument("--length-weight", type=float, default=None, help="eviction: weight of a turn's length")
    evaluate.add_argument("--vector-type", choices=("i8", "f2"), default="i8", help="stored memory vectors (i8)")
    for name, kind in _KNOBS.items():
        evaluate.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None,
                              help=f"fused retrieval: {name} (default: RetrievalSpec's, features.memory_retrieval)")
    evaluate.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    evaluate.set_defaults(handler=_eval_memory)
    synth = sub.add_parser("synth-memory", help="write synthetic multi-session conversations with questions")
    synth.add_argument("out", type=Path, metavar="OUT.json")
    synth.add_argument("--conversations", type=int, default=5)
    synth.add_argument("--sessions", type=int, default=20)
    synth.add_argument("--turns-per-session", type=int, default=30)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_synth_memory)


def register_bench(bench_sub) -> argparse.ArgumentParser:
    """Add ``memory`` to the ``p13n bench`` subparsers; returns its parser."""
    bench = bench_sub.add_parser("memory", help="memory retrieval recall on generated conversations; memory stage cost")
    bench.set_defaults(handler=_bench_memory)
    return bench


def _bench_memory(args: argparse.Namespace) -> int:
    from benchmarks.common import machine_info, write_result
    from benchmarks.memory_bench import memory_markdown, memory_plot, run_memory
    from benchmarks.report import RESULTS_MD, update_results

    result = run_memory(quick=args.quick)
    path = write_result("memory", result, args.out)
    images = memory_plot(result, RESULTS_MD.parent / "plots") if not args.no_results_md else []
    text = memory_markdown({**result, "machine": machine_info()}, images)
    print(text)
    if not args.no_results_md:
        update_results("memory", text)
    print(f"\nresult: {path}")
    return 0


def _eval_memory(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rich.console import Console
    from rich.table import Table

    from features.encoder.runtime import Encoder
    from features.core.memory import MemorySpec
    from features.evaluation.memory_recall import evaluate_memory, load_conversations
    from features.core.memory_retrieval import RetrievalSpec
    from features.core.prompt import token_counter

    cfg = Config.from_sources(file=args.config)
    try:
        conversations = load_conversations(args.file)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read conversations from {args.file}: {exc}") from exc
    spec = MemorySpec()
    if args.max_mentions is not None:
        spec = replace(spec, max_mentions=args.max_mentions)
    if args.length_weight is not None:
        spec = replace(spec, length_weight=args.length_weight)
    console = Console(highlight=False, soft_wrap=True)
    with console.status("loading encoder…"):
        encoder = Encoder.from_config(cfg.encoder)
        count = token_counter(cfg.serving.prompt_tokenizer) if cfg.serving.prompt_tokenizer else encoder.count_tokens
    with console.status(f"folding and querying {len(conversations)} conversations…"):
        knobs = {name: getattr(args, name) for name in _KNOBS if getattr(args, name) is not None}
        retrieval = RetrievalSpec(max_chars=cfg.memory.max_chars, **knobs)
        result = evaluate_memory(conversations, encoder.encode, count, dim=encoder.dimension, budgets=args.budgets,
                                 spec=spec, retrieval=retrieval, vector_type=args.vector_type)  # fmt: skip
    table = Table(title=f"{args.file}: evidence recall, {result.questions} questions, {result.evidence} evidence turns")
    table.add_column("retriever")
    for budget in args.budgets:
        table.add_column(f"@{budget} tokens", justify="right")
    for mode, rows in result.recall.items():
        table.add_row(mode if mode != "recent" else "last-N turns", *(f"{rows[b]:.3f}" for b in args.budgets))
    console.print(table)
    out = result.to_json()
    console.print(f"{result.turns} turns -> {result.memories} memories, {out['bytes_per_memory']} bytes per memory "
                  f"({args.vector_type} vectors); fused retrieval {result.query_ms} ms")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _synth_memory(args: argparse.Namespace) -> int:
    from features.datasets.conversations import generate

    data = generate(args.conversations, seed=args.seed, sessions=args.sessions,
                    turns_per_session=args.turns_per_session)
    args.out.write_text(json.dumps(data, indent=1))
    questions = sum(len(c["qa"]) for c in data)
    print(f"wrote {len(data)} conversations with {questions} questions to {args.out}")
    return 0
