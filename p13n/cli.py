"""The ``p13n`` command line.

Every subcommand has ``--help``. Errors print one line, ``p13n: error: …``, and
exit 2 for bad configuration/input, 1 when a server fails, 130 on Ctrl-C.
Heavy modules are imported inside the handlers, so ``p13n --help`` is instant.

Each group of subcommands is registered, and handled, in one module: ``config``, ``dev``, ``demo`` and
``encoder`` here; ``produce``, ``consume``, ``serve`` in :mod:`p13n.cli_run`; ``eval``, ``import``, ``tune``,
``synth`` in :mod:`p13n.cli_offline`; ``bench`` in :mod:`p13n.cli_bench`; ``eval-memory`` and ``synth-memory``
in :mod:`p13n.cli_memory`. What they share (argument types, configuration loading, the console, the dev
stack) is :mod:`p13n.cli_common`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from p13n.cli_bench import register as register_bench_commands
from p13n.cli_common import DEV_SERVICES, console as _console, dev_stack as _dev_stack, load_config as _load
from p13n.cli_common import positive_int as _positive_int, topics as _topics
from p13n.cli_memory import register as register_memory_commands
from p13n.cli_memory import route as route_eval_memory
from p13n.cli_offline import register as register_offline_commands
from p13n.cli_run import register as register_run_commands
from p13n.config import Config
from p13n.errors import P13nError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one registration function per group of subcommands, in the order ``--help``
    lists them (the groups' handlers live beside their registration)."""
    parser = argparse.ArgumentParser(
        prog="p13n",
        description="Streaming personalization middleware: Kafka events -> user state in Redis -> "
        "scoring and LLM prompt rewriting.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $P13N_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _register_config(sub)
    _register_dev(sub)  # dev …, demo
    _register_encoder(sub)
    register_run_commands(sub)  # produce, consume, serve
    register_offline_commands(sub)  # eval, import, tune, synth
    register_bench_commands(sub)  # bench …
    register_memory_commands(sub)  # eval-memory (`p13n eval memory FILE`), synth-memory
    return parser


def _register_config(sub) -> None:
    """``config show | check | reference``."""
    config = sub.add_parser("config", help="show, check or document the configuration")
    config_sub = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_sub.add_parser("show", help="print the effective configuration as JSON").set_defaults(handler=_config_show)
    config_sub.add_parser("check", help="validate and connect to Redis and Kafka").set_defaults(handler=_config_check)
    config_sub.add_parser("reference", help="print the configuration reference (Markdown)").set_defaults(
        handler=_config_reference
    )


def _register_dev(sub) -> None:
    """``dev up | down | status`` (the embedded stack) and ``demo``, which starts it."""
    dev = sub.add_parser("dev", help="embedded stack: Redis-compatible server + Kafka-compatible broker")
    dev_sub = dev.add_subparsers(dest="action", metavar="ACTION", required=True)
    dev_sub.add_parser("up", help="start the stack (or report the running one)").set_defaults(handler=_dev_up)
    dev_sub.add_parser("down", help="stop everything `up` started").set_defaults(handler=_dev_down)
    dev_sub.add_parser("status", help="show what is running").set_defaults(handler=_dev_status)

    # demo ------------------------------------------------------------------------------
    demo = sub.add_parser("demo", help="start the dev stack and run the demo")
    demo.add_argument("--users", type=_positive_int, default=40, help="synthetic users (default 40)")
    demo.set_defaults(handler=_demo)


def _register_encoder(sub) -> None:
    """``encoder export``."""
    encoder = sub.add_parser("encoder", help="sentence encoder tools")
    encoder_sub = encoder.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = encoder_sub.add_parser("export", help="export a sentence-transformers model to ONNX (+ int8)")
    export.add_argument("--model", type=Path, help="sentence-transformers model directory (default: all-MiniLM-L6-v2)")
    export.add_argument("--quantize", choices=["int8", "none"], default="int8", help="also write the int8 models (dynamic and static)")
    export.add_argument("--output", type=Path, help="output directory (default: encoder.path)")
    export.add_argument("--if-missing", action="store_true", help="keep an up-to-date export, adding only missing variants")
    export.set_defaults(handler=_encoder_export)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(route_eval_memory(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.handler(args) or 0)
    except P13nError as exc:
        print(f"p13n: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("p13n: interrupted", file=sys.stderr)
        return 130


# --- config -----------------------------------------------------------------------------------
def _config_show(args: argparse.Namespace) -> int:
    print(json.dumps(_load(args).to_dict(), indent=2))
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from p13n.connections import check_redis, redacted_url
    from p13n.kafka_client import check_kafka

    cfg = _load(args)
    check_redis(cfg.redis)
    check_kafka(cfg.kafka)
    print(f"configuration ok; Redis at {redacted_url(cfg.redis.url)} and Kafka at {cfg.kafka.bootstrap} answer")
    return 0


def _config_reference(args: argparse.Namespace) -> int:
    from p13n.config import config_reference_markdown

    print(config_reference_markdown(), end="")
    return 0


# --- dev ----------------------------------------------------------------------------------------
def _dev_up(args: argparse.Namespace) -> int:
    cfg = Config.from_sources(file=args.config)
    console = _console()
    stack = _dev_stack(cfg)
    with console.status("starting the embedded stack (Redis-compatible server, Kafka broker, consumer, Serve app)…"):
        running, started = stack.up(topics=_topics(cfg), services=DEV_SERVICES)
    _print_stack(console, running, started)
    console.print(f"stop it with: [bold]p13n dev down[/bold]   (state in {stack.state_dir.resolve()})")
    return 0


def _print_stack(console, running: dict, started: list[str]) -> None:
    for name, rec in running.items():
        how = "started" if name in started else "already running"
        console.print(f"  {name:<6} {rec.url:<28} pid {rec.pid:<8} {how}   log {rec.log}")


def _dev_down(args: argparse.Namespace) -> int:
    cfg = Config.from_sources(file=args.config)
    stopped = _dev_stack(cfg).down()
    print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    """Every recorded service, running or dead; exit 0 if all run, 1 if one is dead, 3 if none was started."""
    cfg = Config.from_sources(file=args.config)
    records = _dev_stack(cfg).records()
    if not records:
        print("the dev stack is not running (start it with: p13n dev up)")
        return 3
    console = _console()
    dead = [rec.name for rec in records if not rec.is_alive()]
    for rec in records:
        state = "[bold red]DEAD[/bold red]   " if rec.name in dead else "running"
        console.print(f"  {rec.name:<8} {rec.url:<28} pid {rec.pid:<8} {state}   log {rec.log}")
    if dead:
        print(f"p13n: error: {', '.join(dead)} not running (see the log above; `p13n dev up` restarts it)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


# --- demo ---------------------------------------------------------------------------------------
def _demo(args: argparse.Namespace) -> int:
    from p13n.demo import run_demo

    cfg = Config.from_sources(file=args.config)
    return run_demo(cfg, stack=_dev_stack(cfg), topics=_topics(cfg), users=args.users, console=_console(),
                    services=DEV_SERVICES)  # fmt: skip


# --- encoder ------------------------------------------------------------------------------------
def _encoder_export(args: argparse.Namespace) -> int:
    from features.encoder.export import default_model_path, export_encoder, is_current

    cfg = _load(args)
    output = (args.output or cfg.encoder.directory).expanduser()
    model = args.model or default_model_path()
    if args.if_missing and is_current(output, model, args.quantize):
        print(f"encoder at {output} is up to date")
        return 0
    console = _console()
    with console.status("exporting encoder…") as status:
        meta = export_encoder(output, model=model, quantize=args.quantize, progress=lambda s: status.update(s + "…"),
                              reuse=args.if_missing)  # fmt: skip
    console.print(f"exported {meta['dimension']}-d encoder ({', '.join(meta['files'])}) to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
