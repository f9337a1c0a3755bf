"""The ``p13n`` command line.

Every subcommand has ``--help``. Errors print one line, ``p13n: error: …``, and
exit 2 for bad configuration/input, 1 when a server fails, 130 on Ctrl-C.
Heavy modules are imported inside the handlers, so ``p13n --help`` is instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from p13n.cli_memory import register as register_memory_commands
from p13n.cli_memory import route as route_eval_memory
from p13n.cli_bench import register as register_bench_commands
from p13n.cli_common import DEV_SERVICES, console as _console, dev_stack as _dev_stack, dev_stack_defaults, load_config as _load
from p13n.cli_common import positive_float as _positive_float, positive_int as _positive_int, topics as _topics
from p13n.clock import now_ms as wall_ms
from p13n.config import Config
from p13n.errors import ConfigError, P13nError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="p13n",
        description="Streaming personalization middleware: Kafka events -> user state in Redis -> "
        "scoring and LLM prompt rewriting.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file (default: $P13N_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # config ----------------------------------------------------------------------------
    config = sub.add_parser("config", help="show, check or document the configuration")
    config_sub = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    config_sub.add_parser("show", help="print the effective configuration as JSON").set_defaults(handler=_config_show)
    config_sub.add_parser("check", help="validate and connect to Redis and Kafka").set_defaults(handler=_config_check)
    config_sub.add_parser("reference", help="print the configuration reference (Markdown)").set_defaults(
        handler=_config_reference
    )

    # dev -------------------------------------------------------------------------------
    dev = sub.add_parser("dev", help="embedded stack: Redis-compatible server + Kafka-compatible broker")
    dev_sub = dev.add_subparsers(dest="action", metavar="ACTION", required=True)
    dev_sub.add_parser("up", help="start the stack (or report the running one)").set_defaults(handler=_dev_up)
    dev_sub.add_parser("down", help="stop everything `up` started").set_defaults(handler=_dev_down)
    dev_sub.add_parser("status", help="show what is running").set_defaults(handler=_dev_status)

    # demo ------------------------------------------------------------------------------
    demo = sub.add_parser("demo", help="start the dev stack and run the demo")
    demo.add_argument("--users", type=_positive_int, default=40, help="synthetic users (default 40)")
    demo.set_defaults(handler=_demo)

    # encoder ---------------------------------------------------------------------------
    encoder = sub.add_parser("encoder", help="sentence encoder tools")
    encoder_sub = encoder.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = encoder_sub.add_parser("export", help="export a sentence-transformers model to ONNX (+ int8)")
    export.add_argument("--model", type=Path, help="sentence-transformers model directory (default: all-MiniLM-L6-v2)")
    export.add_argument("--quantize", choices=["int8", "none"], default="int8", help="also write the int8 models (dynamic and static)")
    export.add_argument("--output", type=Path, help="output directory (default: encoder.path)")
    export.add_argument("--if-missing", action="store_true", help="keep an up-to-date export, adding only missing variants")
    export.set_defaults(handler=_encoder_export)

    # produce ---------------------------------------------------------------------------
    produce = sub.add_parser("produce", help="publish a JSONL file of events (or catalog items) to Kafka")
    produce.add_argument("file", type=Path, metavar="FILE.jsonl")
    produce.add_argument("--topic", help="topic (default: kafka.events_topic)")
    produce.add_argument("--schema", choices=("events", "items"),
                         help="what the lines are (default: items on kafka.items_topic, events elsewhere)")  # fmt: skip
    produce.add_argument("--rate", type=_positive_float, help="records per second (default: as fast as possible)")
    produce.add_argument("--no-validate", action="store_true",
                         help="send every line untouched, unreadable ones without a key (the consumer dead-letters "
                              "invalid ones)")  # fmt: skip
    produce.set_defaults(handler=_produce)

    # consume ---------------------------------------------------------------------------
    consume = sub.add_parser("consume", help="run a consumer-group member folding events into Redis")
    consume.add_argument("--metrics-port", type=int, help="port of /metrics, /healthz, /readyz (0 = none)")
    consume.set_defaults(handler=_consume)

    # serve -----------------------------------------------------------------------------
    serve = sub.add_parser("serve", help="run the Ray Serve app (HTTP API) against the configured Redis")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default: serving.port)")
    serve.add_argument("--personalizer", choices=["inline", "deployment"], help="override serving.personalizer")
    serve.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    serve.add_argument("--metrics-port", type=int, help="Prometheus port of the local Ray node (default: serving.metrics_port)")
    serve.set_defaults(handler=_serve)

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

    # import ----------------------------------------------------------------------------
    from p13n.cli_import import add_import_parser

    add_import_parser(sub)
    from p13n.cli_tune import add_tune_parser

    add_tune_parser(sub)

    # synth -----------------------------------------------------------------------------
    synth = sub.add_parser("synth", help="write a synthetic event log with drifting interests")
    synth.add_argument("directory", type=Path, help="writes events.jsonl and items.jsonl here")
    synth.add_argument("--users", type=_positive_int, default=200)
    synth.add_argument("--events-per-user", type=_positive_int, default=60)
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(handler=_synth)

    register_bench_commands(sub)  # bench …
    register_memory_commands(sub)  # eval-memory (`p13n eval memory FILE`), synth-memory
    return parser


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


# --- produce ------------------------------------------------------------------------------------
def _produce(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from p13n.kafka_client import ensure_topics
    from stream.producer import make_producer, produce_lines, read_jsonl_lines

    from features.core.events import event_limits

    cfg = _load(args)
    topic = args.topic or cfg.kafka.events_topic
    schema = args.schema or ("items" if topic == cfg.kafka.items_topic else "events")
    lines = list(read_jsonl_lines(args.file))
    ensure_topics(cfg.kafka.bootstrap, {topic: cfg.kafka.partitions})
    producer = make_producer(cfg.kafka)
    columns = (TextColumn("producing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=_console(), transient=True) as progress:
            task = progress.add_task("produce", total=len(lines))
            report = produce_lines(producer, topic, lines, schema=schema, limits=event_limits(cfg.state), rate=args.rate,
                                   validate=not args.no_validate, on_sent=lambda n: progress.update(task, completed=n))  # fmt: skip
    finally:
        producer.close()
    for number, reason in report.rejected[:20]:
        print(f"{args.file}:{number}: rejected: {reason}", file=sys.stderr)
    if len(report.rejected) > 20:
        print(f"… and {len(report.rejected) - 20} more rejected lines", file=sys.stderr)
    for number in report.unkeyed[:20]:
        print(f"{args.file}:{number}: sent without a key (no {'user_id' if schema == 'events' else 'item_id'} "
              f"could be read; the consumer dead-letters it if it is invalid)", file=sys.stderr)  # fmt: skip
    if len(report.unkeyed) > 20:
        print(f"… and {len(report.unkeyed) - 20} more lines sent without a key", file=sys.stderr)
    print(f"sent {report.sent} records to {topic} ({schema}) in {report.seconds:.1f}s ({report.rate:,.0f}/s); "
          f"{len(report.rejected)} rejected")  # fmt: skip
    return 1 if report.rejected else 0


# --- consume ------------------------------------------------------------------------------------
def _consume(args: argparse.Namespace) -> int:
    import logging
    import os
    import signal
    import threading

    from p13n.connections import check_redis
    from p13n.kafka_client import check_kafka
    from stream.consumer import run_consumer

    cfg = _load(args)
    check_redis(cfg.redis)
    check_kafka(cfg.kafka)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        if stop.is_set():
            return
        stop.set()
        grace = cfg.consumer.shutdown_grace_s

        def give_up() -> None:
            print(f"p13n: consumer did not stop within {grace:g}s; exiting without committing", file=sys.stderr)
            os._exit(1)

        timer = threading.Timer(grace, give_up)
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = run_consumer(cfg, stop=stop, metrics_port=args.metrics_port)
    print(f"consumer stopped: {stats.batches} batches, {stats.applied} events applied, "
          f"{stats.dead_letters} dead letters")  # fmt: skip
    return 0


# --- serve --------------------------------------------------------------------------------------
def _serve(args: argparse.Namespace) -> int:
    import os
    import signal
    import threading

    from p13n.connections import check_redis
    from serving.runner import start_serve

    dev_stack = dev_stack_defaults(args)
    cfg = Config.from_sources(file=args.config, defaults=dev_stack)
    check_redis(cfg.redis)
    # the replicas load their configuration from this environment: the dev stack's addresses, where they won
    # above, reach them here
    if cfg.redis.url == dev_stack.get("redis", {}).get("url"):
        os.environ.setdefault("P13N_REDIS_URL", cfg.redis.url)
    if cfg.kafka.bootstrap == dev_stack.get("kafka", {}).get("bootstrap"):
        os.environ.setdefault("P13N_KAFKA_BOOTSTRAP", cfg.kafka.bootstrap)
    if not (cfg.encoder.directory / "p13n_encoder.json").exists():
        raise ConfigError(f"encoder.path: no exported encoder at {cfg.encoder.directory} (run `p13n encoder export`)")
    if not cfg.serving.api_keys:
        print("p13n: warning: serving.api_keys is empty; every API call will be refused with 401", file=sys.stderr)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    metrics_port = cfg.serving.metrics_port if args.metrics_port is None else args.metrics_port
    url = start_serve(host=args.host, port=args.port or cfg.serving.port, num_cpus=args.num_cpus,
                      personalizer=args.personalizer, metrics_port=metrics_port)  # fmt: skip
    metrics = f"; metrics at http://{args.host}:{metrics_port}/metrics" if metrics_port else ""
    print(f"p13n API ready at {url}{metrics}  (Ctrl-C or SIGTERM stops it)", flush=True)
    stop.wait()
    import ray

    ray.shutdown()
    return 0


# --- eval / synth -------------------------------------------------------------------------------
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


if __name__ == "__main__":
    sys.exit(main())
