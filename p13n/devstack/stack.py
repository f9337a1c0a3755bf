"""The embedded development stack: real servers, no root, nothing downloaded.

``p13n dev up`` starts a Redis-compatible server and a Kafka-compatible broker
(:mod:`p13n.devstack.servers`), each on a free port, detached from the calling process
(:mod:`p13n.devstack.processes`), and optionally ``p13n consume`` and ``p13n serve`` against them.
Their PIDs, ports and log files are recorded in ``<state_dir>/stack.json``
(:mod:`p13n.devstack.records`); ``down`` stops exactly the processes recorded there, and a second
``up`` finds the running stack and starts nothing.

The record is checked against ``/proc``: a PID whose command line no longer
names the binary we started (the process died and the PID was reused) counts
as stopped, so ``down`` never signals a stranger.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from p13n.devstack.processes import log_tail, spawn_detached, stop_session, wait_until
from p13n.devstack.records import STACK_FILE, ServiceRecord, make_state_dir, read_records, write_records
from p13n.devstack.servers import (
    http_ok,
    kafka_argv,
    kafka_broker_binary,
    redis_answers,
    redis_argv,
    redis_server_binary,
    tcp_answers,
)
from p13n.errors import ServiceError
from p13n.kafka_client import ensure_topics
from p13n.ports import free_port

__all__ = ["DevStack", "running_endpoints", "config_defaults", "DEV_API_KEYS"]

#: API keys of the dev stack's Serve app unless P13N_SERVING_API_KEYS says otherwise.
DEV_API_KEYS = {"p13n-dev-key": "default", "p13n-demo-key": "demo"}


def running_endpoints(state_dir: Path) -> dict[str, str]:
    """URLs of the services of a dev stack running under ``state_dir`` (empty if none)."""
    stack = DevStack(state_dir)
    return {rec.name: rec.url for rec in stack.records() if rec.is_alive()}


def config_defaults(state_dir: Path) -> dict[str, dict[str, str]]:
    """The configuration layer a dev stack running under ``state_dir`` supplies: its Redis URL and Kafka
    bootstrap (the ``defaults`` of :meth:`p13n.config.Config.from_sources`, below file and environment).

    >>> import tempfile
    >>> config_defaults(Path(tempfile.mkdtemp()))
    {}
    """
    endpoints = running_endpoints(state_dir)
    layer: dict[str, dict[str, str]] = {}
    if "redis" in endpoints:
        layer["redis"] = {"url": endpoints["redis"]}
    if "kafka" in endpoints:
        layer["kafka"] = {"bootstrap": endpoints["kafka"]}
    return layer


class DevStack:
    """The set of processes recorded under one state directory.

    >>> import tempfile
    >>> DevStack(Path(tempfile.mkdtemp())).status()
    {}
    """

    def __init__(self, state_dir: Path, *, redis_server: str = "auto", start_timeout_s: float = 30.0) -> None:
        self.state_dir = Path(state_dir)
        self.redis_server = redis_server
        self.start_timeout_s = start_timeout_s

    @property
    def stack_file(self) -> Path:
        return self.state_dir / STACK_FILE

    # --- records -------------------------------------------------------------------------
    def records(self) -> list[ServiceRecord]:
        """Every service recorded, alive or not."""
        return read_records(self.state_dir)

    def _write(self, records: list[ServiceRecord]) -> None:
        write_records(self.state_dir, records)

    def status(self) -> dict[str, ServiceRecord]:
        """Services that are running now, by name."""
        return {rec.name: rec for rec in self.records() if rec.is_alive()}

    # --- up / down -----------------------------------------------------------------------
    def up(
        self,
        *,
        topics: dict[str, int] | None = None,
        services: tuple[str, ...] = ("redis", "kafka"),
        env: dict[str, str] | None = None,
    ) -> tuple[dict[str, ServiceRecord], list[str]]:
        """Start whichever of ``services`` is not running. Returns (running services, names started now).

        ``consumer`` (a ``p13n consume`` process) runs against this stack's Redis and Kafka with
        ``env`` (default: this process's environment) plus the stack's addresses."""
        running = self.status()
        started: list[str] = []
        records = list(running.values())
        try:
            for name in services:
                if name in running:
                    continue
                current = {r.name: r for r in records}
                if name == "consumer" and topics and "kafka" in current:
                    ensure_topics(current["kafka"].url, topics)  # subscribe to existing topics
                record = {
                    "redis": self._start_redis,
                    "kafka": self._start_kafka,
                    "consumer": lambda: self._start_consumer(current, env),
                    "serve": lambda: self._start_serve(current, env),
                }[name]()
                records.append(record)
                started.append(name)
                self._write(records)
        except BaseException:
            for rec in records:
                if rec.name in started:
                    _stop_process(rec)
            self._write([r for r in records if r.name not in started])
            raise
        status = {rec.name: rec for rec in records}
        if topics and "kafka" in status:
            ensure_topics(status["kafka"].url, topics)
        return status, started

    def down(self) -> list[str]:
        """Stop every recorded process and whatever it started in its session (see
        :func:`_stop_process`); returns the names that were running."""
        stopped = []
        for rec in reversed(self.records()):
            if rec.is_alive():
                _stop_process(rec)
                stopped.append(rec.name)
        if self.stack_file.exists():
            self.stack_file.unlink()
        return stopped

    # --- starters ------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], port: int, url: str) -> ServiceRecord:
        make_state_dir(self.state_dir)
        log_path = self.state_dir / f"{name}.log"
        pid = spawn_detached(argv, cwd=self.state_dir, log=log_path)
        return ServiceRecord(name=name, pid=pid, port=port, url=url, argv=argv, log=str(log_path))

    def _start_redis(self) -> ServiceRecord:
        port = free_port()
        argv = redis_argv(redis_server_binary(self.redis_server), port, self.state_dir.resolve())
        rec = self._spawn("redis", argv, port, f"redis://127.0.0.1:{port}/0")
        self._await(rec, lambda: redis_answers(port))
        return rec

    def _start_kafka(self) -> ServiceRecord:
        binary = kafka_broker_binary()
        port = free_port()
        argv = kafka_argv(binary, port)
        rec = self._spawn("kafka", argv, port, f"127.0.0.1:{port}")
        self._await(rec, lambda: tcp_answers(port))
        return rec

    def _child_env(self, running: dict[str, ServiceRecord], env: dict[str, str] | None) -> dict[str, str]:
        if "redis" not in running or "kafka" not in running:
            raise ServiceError("the consumer and the API need the stack's redis and kafka running")
        child_env = dict(os.environ if env is None else env)
        child_env.update({
            "P13N_REDIS_URL": running["redis"].url,
            "P13N_KAFKA_BOOTSTRAP": running["kafka"].url,
            "P13N_KAFKA_SESSION_TIMEOUT_MS": child_env.get("P13N_KAFKA_SESSION_TIMEOUT_MS", "6000"),
            "P13N_KAFKA_HEARTBEAT_INTERVAL_MS": child_env.get("P13N_KAFKA_HEARTBEAT_INTERVAL_MS", "1000"),
            "P13N_KAFKA_MAX_POLL_INTERVAL_MS": child_env.get("P13N_KAFKA_MAX_POLL_INTERVAL_MS", "10000"),
            "P13N_SERVING_API_KEYS": child_env.get("P13N_SERVING_API_KEYS", json.dumps(DEV_API_KEYS)),
        })  # fmt: skip
        return child_env

    def _start_serve(self, running: dict[str, ServiceRecord], env: dict[str, str] | None) -> ServiceRecord:
        port = free_port()
        # a free metrics port too: the fixed default (serving.metrics_port) is for deployments
        argv = [sys.executable, "-m", "p13n.cli", "serve", "--port", str(port), "--metrics-port", str(free_port())]
        log_path = self.state_dir / "serve.log"
        pid = spawn_detached(argv, cwd=self.state_dir, log=log_path, env=self._child_env(running, env))
        rec = ServiceRecord(name="serve", pid=pid, port=port, url=f"http://127.0.0.1:{port}", argv=argv,
                            log=str(log_path))  # fmt: skip
        self._await(rec, lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=max(self.start_timeout_s, 180))
        return rec

    def _start_consumer(self, running: dict[str, ServiceRecord], env: dict[str, str] | None) -> ServiceRecord:
        port = free_port()
        child_env = self._child_env(running, env)
        argv = [sys.executable, "-m", "p13n.cli", "consume", "--metrics-port", str(port)]
        make_state_dir(self.state_dir)
        log_path = self.state_dir / "consumer.log"
        pid = spawn_detached(argv, cwd=self.state_dir, log=log_path, env=child_env)
        rec = ServiceRecord(name="consumer", pid=pid, port=port, url=f"http://127.0.0.1:{port}/metrics", argv=argv,
                            log=str(log_path))  # fmt: skip
        self._await(rec, lambda: http_ok(f"http://127.0.0.1:{port}/healthz"))
        return rec

    def _await(self, rec: ServiceRecord, ready: Callable[[], bool], timeout_s: float | None = None) -> None:
        def check() -> bool:
            if not rec.is_alive():
                tail = log_tail(Path(rec.log))
                raise ServiceError(f"{rec.name} exited at start: {tail}")
            return ready()

        try:
            wait_until(check, timeout=timeout_s or self.start_timeout_s, what=f"{rec.name} on port {rec.port}")
        except ServiceError:
            _stop_process(rec)
            raise


def _stop_process(rec: ServiceRecord, grace_s: float = 10.0) -> None:
    """Stop a recorded service and everything it started in its session (:func:`stop_session`)."""
    stop_session(rec.pid, name=rec.name, alive=rec.is_alive, grace_s=grace_s)
