"""Secrets reach Serve's processes without being written to any log.

``p13n serve`` once passed every ``P13N_*`` variable in Ray's ``runtime_env``, and Ray's runtime-env
agent wrote them — API keys, the upstream key — to ``runtime_env_agent.log`` (mode 644). Here Serve
(alone, and in the dev stack with its consumer) runs with known secret values (API key, upstream key,
a Redis password in the URL) and its own Ray temp dir; after requests that use each secret, no file
it wrote holds any of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from p13n.devstack import (DevStack, free_port, redis_argv, redis_server_binary, session_members, spawn_detached,
                           wait_until)  # fmt: skip
from p13n.devstack.processes import pid_runs as _pid_runs
from tests.conftest import clean_env
from tests.serving.conftest import running_api


def _secret(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}"


@pytest.fixture
def redis_with_password(tmp_path) -> Iterator[tuple[str, str]]:
    """(URL with the password, password) of a Redis-compatible server that requires it."""
    import redis

    password, port = _secret("redispw"), free_port()
    binary = redis_server_binary()
    pid = spawn_detached([*redis_argv(binary, port, tmp_path), "--requirepass", password], cwd=tmp_path,
                         log=tmp_path / "redis.log")  # fmt: skip

    def answers() -> bool:
        client = redis.Redis(port=port, password=password, socket_timeout=0.3, socket_connect_timeout=0.3)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    try:
        wait_until(answers, timeout=30, what="redis with a password")
        yield f"redis://:{password}@127.0.0.1:{port}/0", password
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not _pid_runs(pid, binary), timeout=10, what="redis exit")


@pytest.fixture
def ray_tmpdir() -> Iterator[Path]:
    """Ray's temp root for one Serve instance: short, since Ray's Unix socket paths live under it."""
    path = Path(tempfile.mkdtemp(prefix="p13n-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def files_under(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file() and not p.is_symlink()]


def ray_files(ray_tmpdir: Path) -> list[Path]:
    """Every file of the one Ray session under ``ray_tmpdir``, and of its HAProxy (in a directory named
    after the node, outside Ray's temp dir)."""
    from ray.serve._private.constants import RAY_SERVE_HAPROXY_CONFIG_FILE_LOC

    sessions = list((ray_tmpdir / "ray").glob("session_2*"))
    assert len(sessions) == 1, sessions
    node_ids = {p.name.rsplit("_", 1)[-1] for p in sessions[0].glob("gcs_server_port_*")}
    assert len(node_ids) == 1, node_ids
    haproxy = Path(RAY_SERVE_HAPROXY_CONFIG_FILE_LOC).parent / node_ids.pop()
    files = files_under(ray_tmpdir, haproxy)
    names = {p.name for p in files}
    assert {"runtime_env_agent.log", "raylet.out", "haproxy.cfg"} <= names, sorted(names)
    return files


def _cmdline(pid: int) -> bytes:
    """The process's command line, empty once it has exited (Ray's short-lived workers come and go)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def leaks(files: list[Path], secrets: dict[str, str]) -> list[tuple[str, str]]:
    """(file, which secret) for every secret value found in a file."""
    return [(str(path), what) for path in files for what, value in secrets.items()
            if value.encode() in path.read_bytes()]  # fmt: skip


def test_serve_writes_no_secret_to_any_log(serving_config, fake_llm, redis_with_password, ray_tmpdir, tmp_path):
    redis_url, redis_password = redis_with_password
    secrets = {"api key": _secret("apikey"), "upstream key": _secret("upstream"), "redis password": redis_password,
               "upstream user secret": _secret("usersecret")}
    env = {
        "P13N_REDIS_URL": redis_url,
        "P13N_SERVING_API_KEYS": json.dumps({secrets["api key"]: "shop"}),
        "P13N_SERVING_UPSTREAM_API_KEY": secrets["upstream key"],
        "P13N_SERVING_UPSTREAM_USER": "pseudonymous",
        "P13N_SERVING_UPSTREAM_USER_SECRET": secrets["upstream user secret"],
        "RAY_TMPDIR": str(ray_tmpdir),
    }
    with running_api(serving_config, fake_llm, tmp_path, **env) as api:
        # each secret is used: the key is accepted, Redis (behind its password) is read, the upstream gets its key
        status, body, _ = api.call("GET", "/v1/users/nobody", key=secrets["api key"])
        assert status == 404, body  # an unknown user: the key was accepted and Redis answered
        status, body, _ = api.call("POST", "/v1/chat/completions", {"model": "m", "user": "nobody", "messages": [
            {"role": "user", "content": "hello"}]}, key=secrets["api key"])  # fmt: skip
        assert status == 200, body
        assert fake_llm.headers[-1]["Authorization"] == f"Bearer {secrets['upstream key']}"
        assert fake_llm.requests[-1]["user"] not in ("nobody", None)  # the pseudonym, keyed by the user secret
        # they reached the replicas through the inherited process environment (readable by its owner only)
        replicas = [pid for pid in session_members(api.proc.pid) if _cmdline(pid).startswith(b"ray::ServeReplica")]
        assert replicas
        for pid in replicas:
            environ = Path(f"/proc/{pid}/environ")
            assert secrets["api key"].encode() in environ.read_bytes()
            assert environ.stat().st_mode & 0o077 == 0
    written = ray_files(ray_tmpdir) + [api.log, tmp_path / "redis.log"]
    assert leaks(written, secrets) == []


def test_dev_stack_writes_no_secret_to_any_log_and_keeps_its_logs_private(ray_tmpdir, tmp_path):
    secrets = {"api key": _secret("apikey"), "upstream key": _secret("upstream")}
    state = tmp_path / "state"
    env = clean_env(P13N_DEV_STATE_DIR=str(state), P13N_SERVING_API_KEYS=json.dumps({secrets["api key"]: "demo"}),
                    P13N_SERVING_UPSTREAM_API_KEY=secrets["upstream key"], RAY_TMPDIR=str(ray_tmpdir))  # fmt: skip

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "p13n.cli", *args], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    try:
        up = cli("dev", "up")
        assert up.returncode == 0, up.stderr
        services = DevStack(state).status()
        assert set(services) == {"redis", "kafka", "consumer", "serve"}
        request = urllib.request.Request(services["serve"].url + "/v1/users/nobody",
                                         headers={"authorization": f"Bearer {secrets['api key']}"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 404  # an unknown user: the key reached the replicas
    finally:
        down = cli("dev", "down")
    assert down.returncode == 0, down.stderr
    stack_files = files_under(state)
    assert {"redis.log", "kafka.log", "consumer.log", "serve.log"} <= {p.name for p in stack_files}
    assert leaks(ray_files(ray_tmpdir) + stack_files, secrets) == []
    assert state.stat().st_mode & 0o777 == 0o700
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in stack_files if p.suffix == ".log"} == {
        name: "0o600" for name in ("redis.log", "kafka.log", "consumer.log", "serve.log")}
