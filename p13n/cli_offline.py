"""The offline commands, which need no running stack: ``p13n eval`` (replay HR@10 / NDCG@10 of every scorer
variant), ``p13n import`` (:mod:`p13n.cli_import`), ``p13n tune`` (:mod:`p13n.cli_tune`) and ``p13n synth``
(a synthetic event log)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from p13n.cli_common import console as _console, positive_int as _positive_int
from p13n.cli_import import add_import_parser
from p13n.cli_tune import add_tune_parser
from p13n.clock import now_ms as wall_ms
from p13n.config import Config

__all__ = ["register"]


def register(sub) -> None:
    """Add ``eval``, ``import``, ``tune`` and ``synth`` to the top-level subparsers ``sub``, in that order."""
    # eval ------------------------------------------------------------------------------
    evaluate = sub.add_parser("eval", help="offline replay: HR@10 / NDCG@10 of every scorer variant")
    evaluate.add_argument("events", type=Path, metavar="EVENTS.jsonl")
    evaluate.add_argument("--items", type=Path, metavar="ITEMS.jsonl", help="catalog records (text, attributes)")
    evaluate.add_argument("--negatives", type=_positive_int, default=100, help="sampled negatives per user (100)")
    evaluate.add_argument("--seed", type=int, default=0, help="random seed of the negative sampling")
    evaluate.add_argument("--at-end", action="store_true",
                          help="score every user after the whole replay (as /v1/score after a Kafka replay), not at "
                               "each user's held-out moment")  # fmt: skip
    evaluate.add_argument("--tuned", type=Path, metavar="TUNED.toml", help="also report the blend of this `p13n tune` output")
    evaluate.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    evaluate.set_defaults(handler=_eval)

    # import, tune ----------------------------------------------------------------------
    add_import_parser(sub)
    add_tune_parser(sub)

    # synth -----------------------------------------------------------------------------
    synth = sub.add_parser("synth", help="write a synthetic event log with drifting interests")
    synth.add_argument("directory", type=Path, help="writes events.jsonl and items.jsonl here")
    synth.add_argument("--users", type=_positive_int, default=200)
    synth.add_argument("--events-per-user", type=_positive_int, default=60)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_synth)


def _eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from features.evaluation.replay import evaluate, load_eval_inputs, variants_of
    from p13n.cli_tune import eval_encode, tuned_config

    cfg = Config.from_sources(file=args.config)
    variants = variants_of(cfg)
    tuned = tuned_config(args.config, args.tuned) if args.tuned else None
    if tuned is not None and tuned.state == cfg.state:
        variants["blend_tuned"] = dict(tuned.scoring.weights)
    console = _console()
    with console.status("loading encoder…") as status:
        inputs = load_eval_inputs(args.events, args.items, encode=eval_encode(cfg), now_ms=wall_ms(),
                                  progress=lambda step: status.update(step + "…"))  # fmt: skip
        status.update(f"replaying {len(inputs.events):,} events…")
        result = evaluate(inputs.events, inputs.items, cfg, text_vectors=inputs.text_vectors,
                          negatives=args.negatives, seed=args.seed, at_end=args.at_end, variants=variants,
                          progress=lambda n: status.update(f"replaying: {n:,} / {len(inputs.events):,} events…"))  # fmt: skip
        if tuned is not None and tuned.state != cfg.state:  # tuned [state] settings (popularity_tau_s): a replay of its own
            status.update("replaying with the tuned [state] settings…")
            result.variants["blend_tuned"] = evaluate(inputs.events, inputs.items, tuned, text_vectors=inputs.text_vectors,
                                                      negatives=args.negatives, seed=args.seed, at_end=args.at_end,
                                                      variants={"blend_tuned": dict(tuned.scoring.weights)}).variants["blend_tuned"]  # fmt: skip
    when = "after the whole replay" if args.at_end else "at each user's moment"
    table = Table(title=f"{args.events}: held-out liked item among {args.negatives} sampled negatives, {when}")
    for column in ("variant", "HR@10", "NDCG@10", "users"):
        table.add_column(column, justify="left" if column == "variant" else "right")
    for name, row in result.variants.items():
        table.add_row(name, f"{row['hr@10']:.3f}", f"{row['ndcg@10']:.3f}", str(row["users"]))
    console.print(table)
    if inputs.rejected:
        console.print(f"{inputs.rejected} invalid lines were skipped")
    if args.json:
        args.json.write_text(json.dumps(result.to_json(), indent=2))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from features.datasets.synthetic import SyntheticSpec, generate

    data = generate(SyntheticSpec(users=args.users, events_per_user=args.events_per_user, seed=args.seed))
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("events.jsonl", data.events), ("items.jsonl", data.items)):
        with (args.directory / name).open("w") as fh:
            fh.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"wrote {len(data.events)} events and {len(data.items)} items to {args.directory}")
    return 0
