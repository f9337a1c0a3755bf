"""A local Redis Cluster of the embedded Redis-compatible server, for tests.

Each master is a real ``valkey-server`` (or ``redis-server``) with ``cluster-enabled yes``
and an append-only file fsynced on every write, in a directory of its own; the test
assigns the 16384 hash slots in equal ranges (``CLUSTER ADDSLOTSRANGE``), introduces the
nodes to each other (``CLUSTER MEET``) and polls until every node reports
``cluster_state:ok``. A master can be killed with SIGKILL and restarted on the same port
and directory: it reloads its slots (``nodes.conf``) and its data (the AOF).

The cluster bus port is set explicitly (``cluster-port``): the default, port + 10000,
does not exist for ephemeral ports above 55535.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import redis

from p13n.devstack import free_port, redis_argv, redis_server_binary, spawn_detached, wait_until

__all__ = ["ClusterNode", "LocalCluster", "SLOTS"]

SLOTS = 16384


@dataclass
class ClusterNode:
    directory: Path
    port: int = field(default_factory=free_port)
    bus_port: int = field(default_factory=free_port)
    pid: int | None = None

    def argv(self) -> list[str]:
        return [*redis_argv(redis_server_binary(), self.port, self.directory, durable=True),
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_port), "--cluster-node-timeout", "1000"]  # fmt: skip

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.pid = spawn_detached(self.argv(), cwd=self.directory, log=self.directory / "server.log")
        wait_until(self.answers, timeout=30, what=f"cluster node :{self.port}")

    def answers(self) -> bool:
        """True once the node answers PING and has loaded its data."""
        with self.client() as client:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                return False

    def cluster_ok(self) -> bool:
        with self.client() as client:
            try:
                return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                return False

    def kill(self) -> None:
        """SIGKILL (no shutdown, no final fsync) and wait until the process is gone."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: _gone(pid), timeout=10, what=f"cluster node :{self.port} to exit")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class LocalCluster:
    """``masters`` cluster nodes under ``directory``, slots split evenly; a context manager.

    ``url`` is a seed node's address for :class:`redis.cluster.RedisCluster` (``redis.cluster: true``)."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [ClusterNode(directory / f"node{n}") for n in range(masters)]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> LocalCluster:
        try:
            for node in self.nodes:
                node.start()
            first = self.nodes[0]
            for n, node in enumerate(self.nodes):
                low, high = n * SLOTS // len(self.nodes), (n + 1) * SLOTS // len(self.nodes) - 1
                with node.client() as client:
                    client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
                    if node is not first:
                        client.execute_command("CLUSTER", "MEET", "127.0.0.1", first.port, first.bus_port)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 30) -> None:
        """Poll until every node reports ``cluster_state:ok`` (all slots served, all nodes known)."""
        wait_until(lambda: all(node.cluster_ok() for node in self.nodes), timeout=timeout, what="cluster_state:ok",
                   interval=0.1)  # fmt: skip

    def node_of(self, key: str) -> ClusterNode:
        """The master whose slot range holds ``key``."""
        with self.nodes[0].client() as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for n, node in enumerate(self.nodes):
            if slot < (n + 1) * SLOTS // len(self.nodes):
                return node
        raise AssertionError(f"slot {slot} is out of range")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
