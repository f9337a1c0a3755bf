"""``p13n tune``: learn the blend weights from a replay and write them as a TOML section.

The validation split is made by :func:`features.evaluation.tuning.validation_events` (each user's latest
item event — ``p13n eval``'s test candidate — removed first, so tuning never sees it). Only the
features the consumer and Serve compute (``scoring.weights``' names) are tuned; the TOML written
is loaded with ``--config`` by ``p13n consume``, ``p13n serve`` and ``p13n eval``, and
``p13n eval --tuned FILE`` reports the tuned blend beside the default one.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from p13n.clock import now_ms as wall_ms
from p13n.config import Config

__all__ = ["add_tune_parser", "eval_encode", "tuned_config"]

#: Popularity time constants (days) ``p13n tune`` tries by default: one validation replay each.
POPULARITY_DAYS = (7.0, 30.0, 365.0)


def tuned_config(config_file, tuned: Path) -> Config:
    """The configuration (``--config`` file, environment) with a ``p13n tune`` output laid over it."""
    import tomllib

    from p13n.errors import ConfigError, open_input

    try:
        with open_input(tuned, ConfigError, what="--tuned file") as fh:
            overrides = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--tuned: {tuned} is not valid TOML: {exc}") from exc
    return Config.from_sources(file=config_file, overrides=overrides)


def eval_encode(cfg: Config):
    """The consumer's encoder (``encoder.consumer_variant``: items get the vectors the consumer gives
    them), with item vectors cached on disk by text beside the encoder's cache."""
    from features.encoder.runtime import Encoder
    from features.evaluation.inputs import cached_encoder

    directory = cfg.encoder.directory
    variant = cfg.encoder.consumer_variant
    encoder = Encoder(directory, variant=variant, threads=cfg.encoder.threads, max_length=cfg.encoder.max_length)
    identity = hashlib.sha1((directory / "p13n_encoder.json").read_bytes() + f"{variant}/{cfg.encoder.max_length}".encode())
    return cached_encoder(encoder.encode, directory.parent / "eval-vectors" / f"{identity.hexdigest()[:16]}.npz")


def add_tune_parser(sub) -> None:
    """Add ``tune EVENTS --items ITEMS --out FILE`` to the subcommands ``sub``."""
    tune = sub.add_parser("tune", help="learn the blend weights on a validation replay; write a [scoring.weights] TOML")
    tune.add_argument("events", type=Path, metavar="EVENTS.jsonl")
    tune.add_argument("--items", type=Path, metavar="ITEMS.jsonl", help="catalog records (text, attributes)")
    tune.add_argument("--out", type=Path, default=Path("tuned.toml"), help="TOML file to write (default tuned.toml)")
    tune.add_argument("--negatives", type=int, default=100, help="sampled negatives per validation user (100)")
    tune.add_argument("--seed", type=int, default=0, help="random seed of the negative sampling")
    tune.add_argument("--popularity-days", type=float, nargs="+", default=list(POPULARITY_DAYS), metavar="DAYS",
                      help="state.popularity_tau_s values to try, in days (one replay each; default 7 30 365)")  # fmt: skip
    tune.set_defaults(handler=_tune)


def _tune(args: argparse.Namespace) -> int:
    from rich.console import Console

    from features.evaluation.inputs import load_eval_inputs
    from features.evaluation.tuning import tune_blend

    cfg = Config.from_sources(file=args.config)
    console = Console(highlight=False, soft_wrap=True)
    with console.status("loading encoder…") as status:
        inputs = load_eval_inputs(args.events, args.items, encode=eval_encode(cfg), now_ms=wall_ms(),
                                  progress=lambda step: status.update(step + "…"))  # fmt: skip
        tuned = tune_blend(inputs.events, inputs.items, cfg, text_vectors=inputs.text_vectors,
                           popularity_days=args.popularity_days, negatives=args.negatives, seed=args.seed,
                           progress=lambda text: status.update(text + "…"))  # fmt: skip
    fitted, days = tuned.fitted, tuned.popularity_days
    baseline = f"validation NDCG@10 of the configuration as it is: {tuned.before[1]:.3f}" if tuned.before else ""
    lines = [f"# p13n tune {args.events}: coordinate ascent on NDCG@10 over {tuned.users} validation users (each user's",
             f"# second-latest item event when liked); popularity tau tried: {', '.join(f'{d:g} d -> {n:.3f}' for d, n in tuned.trials)}.",
             f"# Chosen: {days:g} days, validation HR@10 {fitted.hr:.3f}, NDCG@10 {fitted.ndcg:.3f}. {baseline}",
             f"# Load with --config {args.out} (or p13n eval --tuned {args.out}).",
             "[state]", f"popularity_tau_s = {days * 86400.0!r}",
             "[scoring.weights]", *(f"{name} = {weight!r}" for name, weight in fitted.weights.items())]  # fmt: skip
    args.out.write_text("\n".join(lines) + "\n")
    console.print("\n".join(lines[:4]))
    console.print(f"wrote {args.out}")
    return 0
