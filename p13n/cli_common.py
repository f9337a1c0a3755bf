"""What the command line's modules share: argument types, the configuration as the CLI loads it (with a
running dev stack's addresses as defaults), the console, and the dev stack built from configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from p13n.config import Config

__all__ = ["positive_float", "positive_int", "load_config", "console", "dev_stack", "DEV_SERVICES", "topics", "dev_stack_defaults"]


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def load_config(args: argparse.Namespace) -> Config:
    """The configuration, with a running dev stack's addresses as defaults (below file and environment)."""
    return Config.from_sources(file=args.config, defaults=dev_stack_defaults(args))


def dev_stack_defaults(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    from p13n.devstack import config_defaults

    return config_defaults(Path(Config.from_sources(file=args.config).dev.state_dir))


def console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)

def dev_stack(cfg: Config):
    from p13n.devstack import DevStack

    return DevStack(Path(cfg.dev.state_dir), redis_server=cfg.dev.redis_server, start_timeout_s=cfg.dev.start_timeout_s)


DEV_SERVICES = ("redis", "kafka", "consumer", "serve")


def topics(cfg: Config) -> dict[str, int]:
    k = cfg.kafka
    return {k.events_topic: k.partitions, k.items_topic: k.partitions, k.dlq_topic: 1}
