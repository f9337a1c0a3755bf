"""``p13n produce``, ``p13n consume`` and ``p13n serve``: feed Kafka and run the two processes (the consumer
folding events into Redis, the Ray Serve app answering HTTP) against the configured Redis and Kafka."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from p13n.cli_common import console as _console, dev_stack_defaults, load_config as _load
from p13n.cli_common import positive_float as _positive_float, positive_int as _positive_int
from p13n.config import Config
from p13n.errors import ConfigError

__all__ = ["register"]


def register(sub) -> None:
    """Add ``produce``, ``consume`` and ``serve`` to the top-level subparsers ``sub``."""
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
    serve.add_argument("--ingress-replicas", type=_positive_int, default=1,
                       help="Ingress replicas on this machine, in place of the Serve config's autoscaling (default 1)")
    serve.set_defaults(handler=_serve)


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
                      personalizer=args.personalizer, metrics_port=metrics_port,
                      ingress_replicas=args.ingress_replicas)  # fmt: skip
    metrics = f"; metrics at http://{args.host}:{metrics_port}/metrics" if metrics_port else ""
    print(f"p13n API ready at {url}{metrics}  (Ctrl-C or SIGTERM stops it)", flush=True)
    stop.wait()
    import ray

    ray.shutdown()
    return 0

