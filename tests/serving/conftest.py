"""One real Serve instance for the serving tests, against its own Redis (which tests may stop).

* ``serving_redis``: a Valkey/Redis server with an append-only file, so it can be killed and
  restarted mid-test without losing the state the tests seeded;
* ``fake_llm``: the local OpenAI-protocol stand-in;
* ``api``: ``p13n serve`` as a subprocess (HTTP only, as users see it), polled for readiness;
* ``seeded``: two tenants' users folded in with the real processing stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from features.redis.store import RedisStore
from features.datasets.synthetic import SyntheticSpec, generate
from p13n.clock import now_ms as wall_ms
from p13n.config import Config
from p13n.devstack import free_port, redis_argv, redis_server_binary, spawn_detached, wait_until
from stream.processing import BatchProcessor, records_from_lines
from tests.conftest import REPO, clean_env

KEYS = {"key-shop": "shop", "key-news": "news", "key-movielens": "movielens"}  # movielens: test_real_path_quality alone
PREFIX = "tserve"


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.pid: int | None = None

    def start(self) -> None:
        argv = redis_argv(redis_server_binary(), self.port, self.directory, durable=True)
        self.pid = spawn_detached(argv, cwd=self.directory, log=self.directory / "redis.log")
        wait_until(self.answers, timeout=30, what="serving redis")

    def answers(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_timeout=0.3, socket_connect_timeout=0.3)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False
        finally:
            client.close()

    def kill(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGKILL)
            wait_until(lambda: not Path(f"/proc/{self.pid}").exists() or _zombie(self.pid), timeout=10, what="redis exit")
            self.pid = None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture(scope="session")
def serving_redis(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("serving-redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def fake_llm():
    from tests.serving.fake_llm import FakeLLM

    llm = FakeLLM().start()
    yield llm
    llm.stop()


@pytest.fixture(scope="session")
def serving_config(serving_redis, servers) -> Config:
    return Config.from_sources(env={}, overrides={
        "redis": {"url": serving_redis.url, "prefix": PREFIX},
        "kafka": {"bootstrap": servers["kafka"], "events_topic": "serving-events"},
        "serving": {"api_keys": KEYS},
    })  # fmt: skip


@dataclass
class Api:
    url: str
    proc: subprocess.Popen
    log: Path
    metrics_url: str  # the Ray node's Prometheus endpoint: every replica's metrics

    def call(self, method: str, path: str, body=None, key: str | None = "key-shop", raw: bytes | None = None,
             timeout: float = 30) -> tuple[int, dict, float]:  # fmt: skip
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"content-type": "application/json"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            payload, status = exc.read(), exc.code
        elapsed_ms = (time.perf_counter() - started) * 1000
        try:
            return status, json.loads(payload) if payload else {}, elapsed_ms
        except ValueError:  # e.g. the proxy's plain-text 404 before the app is deployed
            return status, {"raw": payload.decode(errors="replace")}, elapsed_ms


@contextlib.contextmanager
def running_api(serving_config, fake_llm, log_dir: Path, **env_overrides: str) -> Iterator[Api]:
    """``p13n serve`` as a subprocess with the test configuration (plus ``env_overrides``), polled for readiness."""
    port, metrics_port = free_port(), free_port()
    log = log_dir / "serve.log"
    env = clean_env(**{
        "P13N_REDIS_URL": serving_config.redis.url,
        "P13N_REDIS_PREFIX": PREFIX,
        "P13N_REDIS_TIMEOUT_MS": "300",
        "P13N_KAFKA_BOOTSTRAP": serving_config.kafka.bootstrap,
        "P13N_KAFKA_EVENTS_TOPIC": serving_config.kafka.events_topic,
        "P13N_SERVING_API_KEYS": json.dumps(KEYS),
        "P13N_SERVING_UPSTREAM_URL": fake_llm.url,
        "P13N_SERVING_UPSTREAM_API_KEY": "upstream-secret",
        "P13N_SERVING_MAX_CANDIDATES": "300",
        "P13N_SERVING_MAX_PROMPT_BYTES": "4000",
        "P13N_SERVING_BODY_TIMEOUT_S": "2",
        "P13N_SERVING_UPSTREAM_TIMEOUT_S": "3",
        **env_overrides,
    })  # fmt: skip
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "p13n.cli", "serve", "--port", str(port), "--num-cpus", "2",
                                 "--metrics-port", str(metrics_port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    service = Api(f"http://127.0.0.1:{port}", proc, log, f"http://127.0.0.1:{metrics_port}/metrics")

    def healthy() -> bool:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            return service.call("GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    try:
        wait_until(healthy, timeout=180, what="p13n serve", interval=0.5)
        yield service
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def api(serving_config, fake_llm, tmp_path_factory) -> Iterator[Api]:
    """Module-scoped: one Serve instance at a time keeps the 2-core test machine responsive. Instances side
    by side no longer answer each other's requests (each has its own ports: ``test_instances.py``)."""
    with running_api(serving_config, fake_llm, tmp_path_factory.mktemp("serve")) as service:
        yield service


@dataclass
class Seeded:
    store: RedisStore
    config: Config
    data: dict  # tenant -> SyntheticData
    now_ms: int


@pytest.fixture(scope="session")
def seeded(serving_config, consumer_encoder, serving_redis) -> Seeded:
    """Two tenants with synthetic users whose events end now, folded by the real processing stage."""
    from p13n.connections import redis_client

    now_ms = wall_ms()
    store = RedisStore(redis_client(serving_config.redis), serving_config, dim=consumer_encoder.dimension)
    processor = BatchProcessor(store, serving_config, consumer_encoder.encode, clock_ms=lambda: now_ms)
    data = {}
    for n, tenant in enumerate(("shop", "news")):
        spec = SyntheticSpec(users=12, events_per_user=30, seed=40 + n, tenant=tenant, start_ms=now_ms - 20 * 86_400_000,
                             days=20.0, out_of_order_fraction=0.0, duplicate_fraction=0.0)  # fmt: skip
        generated = generate(spec)
        records = records_from_lines([json.dumps(i).encode() for i in generated.items], "items")
        processor.process_items(records)
        processor.process_events(records_from_lines([json.dumps(e).encode() for e in generated.events], "events"))
        data[tenant] = generated
    return Seeded(store=store, config=serving_config, data=data, now_ms=now_ms)
