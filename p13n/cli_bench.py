"""``p13n bench …``: the benchmark commands (results in ``benchmarks/out/*.json`` and ``benchmarks/RESULTS.md``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from p13n.cli_common import DEV_SERVICES, console as _console, dev_stack as _dev_stack, load_config as _load
from p13n.cli_common import positive_float as _positive_float, positive_int as _positive_int, topics as _topics
from p13n.cli_memory import register_bench as register_memory_bench
from p13n.config import Config
from p13n.errors import ConfigError, ServiceError

__all__ = ["register"]


def register(sub) -> None:
    """Add ``bench`` and its benchmarks to the top-level subparsers ``sub``."""
    bench = sub.add_parser("bench", help="benchmarks (results in benchmarks/out/*.json and benchmarks/RESULTS.md)")
    bench_sub = bench.add_subparsers(dest="action", metavar="BENCHMARK", required=True)
    for name, what, handler in (("features", "fold throughput, Redis bytes per user, encoder latency", _bench_features),
                                ("ingest", "processing-stage throughput, broker ceiling, end-to-end freshness",
                                 _bench_ingest)):  # fmt: skip
        parser = bench_sub.add_parser(name, help=what)
        parser.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
        parser.add_argument("--out", type=Path, help="directory of the JSON result (default benchmarks/out)")
        parser.add_argument("--no-results-md", action="store_true", help="do not update benchmarks/RESULTS.md")
        parser.set_defaults(handler=handler)
    _register_load(bench_sub)
    encoder, quality = _register_encoder(bench_sub), _register_quality(bench_sub)
    memory = register_memory_bench(bench_sub)  # bench memory
    everything = bench_sub.add_parser("all", help="every benchmark above, against the dev stack (started if needed)")
    for sub_parser in (encoder, quality, everything, memory):
        sub_parser.add_argument("--quick", action="store_true", help="a few seconds each, for smoke tests")
        sub_parser.add_argument("--out", type=Path, help="directory of the JSON results (default benchmarks/out)")
        sub_parser.add_argument("--no-results-md", action="store_true", help="do not update benchmarks/RESULTS.md")
    encoder.set_defaults(handler=_bench_encoder)
    quality.set_defaults(handler=_bench_quality)
    everything.add_argument("--key", default="p13n-demo-key", help="API key for the load test")
    everything.add_argument("--users", type=_positive_int, default=200, help="synthetic users of the load test")
    everything.add_argument("--url", help=argparse.SUPPRESS)
    everything.set_defaults(handler=_bench_all)


def _register_load(bench_sub) -> None:
    """``bench load``: its steps, arrival process, request shapes and burst sizes."""
    load = bench_sub.add_parser("load", help="open-loop latency of /v1/score and /v1/rewrite on a running stack")
    load.add_argument("--quick", action="store_true", help="a few seconds, for smoke tests")
    load.add_argument("--url", help="base URL of the API (default: the running dev stack's)")
    load.add_argument("--key", default="p13n-demo-key", help="API key (default: the dev stack's demo key)")
    load.add_argument("--users", type=_positive_int, default=200, help="synthetic users to seed first (200)")
    load.add_argument("--out", type=Path, help="directory of the JSON result (default benchmarks/out)")
    load.add_argument("--no-results-md", action="store_true", help="do not update benchmarks/RESULTS.md")
    load.add_argument("--arrivals", choices=("poisson", "uniform"), default="poisson",
                      help="arrival process of every step (poisson: seeded exponential gaps; uniform: even)")
    load.add_argument("--shapes", choices=("synthetic", "movielens"), default="synthetic",
                      help="/v1/score requests from synthetic users or replayed MovieLens users (needs --movielens)")
    load.add_argument("--movielens", type=Path, metavar="DIR", help="MovieLens directory for --shapes movielens")
    load.add_argument("--steps", default="floor,score,rewrite,budget,arrivals,bursts,memories",
                      help="comma-separated steps to run (floor,score,rewrite,budget,arrivals,bursts,memories; "
                           "memories: /v1/rewrite for users holding 500 memories each; "
                           "locust: the same /v1/score cell from Locust, needs the bench extra)")
    load.add_argument("--compare-rates", default="100,200", help="rates of the uniform-vs-Poisson step (100,200)")
    load.add_argument("--burst-sizes", default="8,32,128", help="requests per burst (8,32,128)")
    load.add_argument("--bursts", type=_positive_int, default=100, help="bursts per size (100)")
    load.add_argument("--burst-interval", type=_positive_float, default=0.5, help="seconds between bursts (0.5)")
    load.add_argument("--write-bodies", type=Path, metavar="FILE",
                      help="also write the /v1/score bodies as JSONL (for benchmarks/locustfile.py)")
    load.add_argument("--seed", type=int, default=0, help="seed of the Poisson gaps and negative sampling (0)")
    load.set_defaults(handler=_bench_load)


def _register_encoder(bench_sub) -> argparse.ArgumentParser:
    """``bench encoder`` without the flags every bench command shares; returns its parser."""
    encoder = bench_sub.add_parser("encoder", help="torch vs ONNX fp32/int8; Serve dynamic batching vs unbatched; "
                                                   "catalog items/s")  # fmt: skip
    encoder.add_argument("--movielens", type=Path, metavar="DIR",
                         help="MovieLens directory whose titles the catalog step embeds (default: tests/data/movielens-tiny)")
    encoder.add_argument("--catalog-only", action="store_true", help="only the catalog items/s (no torch, no Serve)")
    return encoder


def _register_quality(bench_sub) -> argparse.ArgumentParser:
    """``bench quality`` without the flags every bench command shares; returns its parser."""
    quality = bench_sub.add_parser("quality", help="p13n eval on the synthetic dataset (and --events FILE)")
    quality.add_argument("--events", type=Path, action="append", default=[], help="also evaluate this JSONL event log")
    quality.add_argument("--items", type=Path, help="catalog of the --events log")
    quality.add_argument("--movielens", type=Path, metavar="DIR",
                         help="also run issue 13's protocol on this MovieLens directory (offline, both modes, tuned blends) "
                              "and through the real path: Kafka, the consumer and /v1/score of the dev stack (started if needed)")  # fmt: skip
    quality.add_argument("--offline-only", action="store_true",
                         help="with --movielens: skip the real path (no dev stack needed)")
    quality.add_argument("--url", help="with --movielens: base URL of the API for the real path (default: the dev stack's)")
    quality.add_argument("--key", default="p13n-demo-key", help="API key of the real path (default: the dev stack's demo key)")
    return quality


# --- bench --------------------------------------------------------------------------------------
def _run_bench(args: argparse.Namespace, name: str, what: str, run, markdown, needs_kafka: bool = False) -> int:
    """Run one benchmark, write its JSON, print its RESULTS.md section and (unless told not to) store it."""
    from benchmarks.common import machine_info, write_result
    from benchmarks.report import update_results
    from p13n.connections import check_redis, redis_client
    from p13n.kafka_client import check_kafka

    cfg = _load(args)
    check_redis(cfg.redis)
    if needs_kafka:
        check_kafka(cfg.kafka)
    console = _console()
    with console.status(f"running {what}…"):
        result = run(cfg, redis_client(cfg.redis), quick=args.quick)
    path = write_result(name, result, args.out)
    text = markdown({**result, "machine": machine_info()})
    console.print(text, markup=False)
    if not args.no_results_md:
        update_results(name, text)
    console.print(f"\nresult: {path}")
    return 0


def _bench_features(args: argparse.Namespace) -> int:
    from benchmarks.micro import features_markdown, run_features

    return _run_bench(args, "features", "core micro-benchmarks (fold, Redis bytes, encoders)", run_features,
                      features_markdown)  # fmt: skip


def _bench_ingest(args: argparse.Namespace) -> int:
    from benchmarks.ingest import ingest_markdown, run_ingest

    return _run_bench(args, "ingest", "ingestion benchmarks (processing stage, broker ceiling, end to end)",
                      run_ingest, ingest_markdown, needs_kafka=True)  # fmt: skip


def _bench_encoder(args: argparse.Namespace) -> int:
    from benchmarks.encoder_bench import encoder_markdown, run_encoder

    def run(cfg, client, quick: bool) -> dict:
        return run_encoder(cfg, client, quick=quick, movielens=args.movielens, catalog_only=args.catalog_only)

    return _run_bench(args, "encoder", "encoder benchmarks (torch vs ONNX, Serve batching, catalogs)", run,
                      encoder_markdown)  # fmt: skip


def _bench_quality(args: argparse.Namespace) -> int:
    from benchmarks.quality import plot_quality, quality_markdown, run_quality
    from benchmarks.report import RESULTS_MD

    extra = [(events, getattr(args, "items", None)) for events in getattr(args, "events", [])]
    images: list[Path] = []

    def markdown(result: dict) -> str:
        images.extend(plot_quality(result, (args.out or RESULTS_MD.parent) / "plots"))
        return quality_markdown(result, images)

    movielens = getattr(args, "movielens", None)
    real_path = movielens is not None and not args.offline_only
    if real_path and not args.url:
        _ensure_dev_stack(args, "starting the dev stack for the real path…")

    def run(cfg: Config, client, quick: bool) -> dict:
        from benchmarks.quality_real_path import add_real_path, run_real_path
        from p13n.devstack import running_endpoints

        result = run_quality(cfg, quick=quick, extra=extra, movielens=movielens)
        if real_path:
            url = args.url or running_endpoints(Path(cfg.dev.state_dir)).get("serve")
            add_real_path(result, run_real_path(cfg, movielens, url=url, key=args.key))
        return result

    return _run_bench(args, "quality", "replay quality (offline, and MovieLens through the real path)", run, markdown)


def _ensure_dev_stack(args: argparse.Namespace, what: str) -> None:
    cfg = Config.from_sources(file=args.config)
    stack = _dev_stack(cfg)
    if "serve" not in stack.status():
        with _console().status(what):
            stack.up(topics=_topics(cfg), services=DEV_SERVICES)


def _bench_all(args: argparse.Namespace) -> int:
    """Each benchmark in a fresh process, as when run alone: one step's heap, threads (torch's) and
    collector work must not stall the next one's load generator (a shared process once showed a
    251 ms p99 send lag in the load step against 1–3 ms when run alone)."""
    import subprocess

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    _ensure_dev_stack(args, "starting the dev stack for the load test…")
    common = [*(["--config", str(args.config)] if args.config else []), "bench"]
    flags = [*(["--quick"] if args.quick else []), *(["--out", str(args.out)] if args.out else []),
             *(["--no-results-md"] if args.no_results_md else [])]  # fmt: skip
    steps = {"features": [], "ingest": [], "encoder": [], "quality": [], "load": ["--key", args.key, "--users", str(args.users)]}
    columns = (TextColumn("[bold]bench all[/bold] {task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=_console()) as progress:
        task = progress.add_task("", total=len(steps))
        for name, extra in steps.items():
            progress.update(task, description=name)
            done = subprocess.run([sys.executable, "-m", "p13n.cli", *common, name, *flags, *extra])
            if done.returncode != 0:
                raise ServiceError(f"`p13n bench {name}` failed (exit {done.returncode}); see its output above")
            progress.advance(task)
    return 0


def _bench_load(args: argparse.Namespace) -> int:
    from benchmarks.common import machine_info, write_result
    from benchmarks.load import DEFAULT_STEPS, STEPS, LoadTarget, run_load, seed_users
    from benchmarks.load_report import load_markdown, plot_load
    from benchmarks.memory_load import seed_memory_users
    from benchmarks.report import RESULTS_MD, update_results
    from benchmarks.shapes import movielens_shapes
    from p13n.devstack import running_endpoints

    cfg = _load(args)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if not steps or set(steps) - set(STEPS):
        raise ConfigError(f"--steps: expected a comma-separated subset of {','.join(STEPS)}, got {args.steps!r}")
    try:
        compare = [_positive_float(r) for r in args.compare_rates.split(",")]
        sizes = [_positive_int(n) for n in args.burst_sizes.split(",")]
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"--compare-rates/--burst-sizes: {exc}") from exc
    if args.shapes == "movielens" and args.movielens is None:
        raise ConfigError("--shapes movielens needs --movielens DIR (the MovieLens directory, e.g. ml-latest-small)")
    url = args.url or running_endpoints(Path(cfg.dev.state_dir)).get("serve")
    if not url:
        raise ConfigError("no API to load: start the stack with `p13n dev up` or pass --url")
    console = _console()
    with console.status("seeding users through Kafka and the consumer…") as status:
        users, items = seed_users(cfg, users=args.users)
        shapes = memories = None
        if args.shapes == "movielens":
            shapes = movielens_shapes(cfg, args.movielens, seed=args.seed, progress=lambda t: status.update(f"{t}…"))
        if "memories" in steps:
            memories = seed_memory_users(cfg, users=2 if args.quick else 20, memories=100 if args.quick else 500,
                                         progress=lambda t: status.update(f"{t}…"))  # fmt: skip
    target = LoadTarget(url, args.key, users, items, shapes, memories)
    if args.write_bodies:
        args.write_bodies.write_text("".join(json.dumps(target.shapes.score_body(n)) + "\n"
                                             for n in range(len(target.shapes.users))))  # fmt: skip
    with console.status("load test…") as status:
        result = run_load(target, quick=args.quick, arrivals=args.arrivals,
                          steps=steps, compare_rates=compare, burst_sizes=sizes, bursts=args.bursts,
                          burst_interval_s=args.burst_interval, seed=args.seed,
                          progress=lambda text: status.update(f"load test: {text}…"))  # fmt: skip
    result["quick"] = args.quick
    result["command"] = "p13n bench load " + " ".join(sys.argv[sys.argv.index("load") + 1 :])
    # the default run keeps the `load` section; other steps or shapes get their own, side by side
    name = "load" if steps == list(DEFAULT_STEPS) and args.shapes == "synthetic" else "-".join(["load", args.shapes, *steps])
    path = write_result(name, result, args.out)
    images = plot_load(result, (args.out or RESULTS_MD.parent) / "plots")
    text = load_markdown({**result, "machine": machine_info()}, images)
    console.print(text, markup=False)
    if not args.no_results_md:
        update_results(name, text)
    console.print(f"\nresult: {path}")
    return 0
