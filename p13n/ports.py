"""Free TCP ports on this machine: a leaf utility for the dev stack, ``p13n serve`` and tests.

>>> 1024 < free_port() < ephemeral_range()[0]
True
"""

from __future__ import annotations

import random
import socket
from contextlib import closing
from pathlib import Path

__all__ = ["free_port", "ephemeral_range", "LOWEST", "HIGHEST"]

# Ray's workers bind ports 10002-19999 (``ray start --min/max-worker-port`` defaults), its dashboard 8265 and
# metrics 8080, Serve's replicas 30000-31000 (serving.runner): the ports handed out here lie between them.
LOWEST = 20_000
HIGHEST = 29_999
_GIVEN: set[int] = set()  # ports this process has handed out: never again, whoever binds them first
_PICK = random.Random()  # its own generator: a test that seeds `random` must not make two processes pick alike


def ephemeral_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """(lowest, highest) port the kernel assigns to ``bind(0)`` and outgoing connections; Linux's default
    (32768, 60999) when the file is missing or unreadable.

    >>> ephemeral_range(Path("/nonexistent"))
    (32768, 60999)
    """
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the kernel's ephemeral range, and
    that this process has not handed out before.

    A port is free only until somebody binds it, and the dev stack picks Serve's port before Ray starts.
    From the ephemeral range, that port was once taken in between by one of the many sockets Ray opens
    while it starts (Serve: "Failed to bind to address"), and the kernel once offered one port twice to one
    process (the consumer's metrics server then answered the demo's ``POST /v1/score`` with 405). Below the
    range the kernel never hands a port out by itself, so only another explicit pick can take it: a random
    one of 20000..29999 (below Serve's replica ports too), checked by binding it, never repeated by this process. A random pick also keeps ports
    that an earlier broker just released (Tansu cannot rebind them) unlikely to come back soon.

    Raises :class:`OSError` when no port of the range could be bound after 1,000 tries.

    >>> len({free_port() for _ in range(50)})
    50
    """
    high = max(min(ephemeral_range()[0], HIGHEST + 1), LOWEST + 1_000)
    for _ in range(1_000):
        port = _PICK.randrange(LOWEST, high)
        if port in _GIVEN:
            continue
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise OSError(f"no free TCP port in {LOWEST}..{high - 1} after 1,000 tries")
