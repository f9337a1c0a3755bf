"""Free TCP ports on this machine: a leaf utility for the dev stack, ``p13n serve`` and tests.

>>> 1024 < free_port() < 65536
True
"""

from __future__ import annotations

import socket
from contextlib import closing

__all__ = ["free_port"]


_GIVEN: set[int] = set()  # ports this process has handed out: the kernel may offer one again before its user binds it


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and that this process has not handed out before.

    The kernel picks it from the ephemeral range, so ports just released by an
    earlier broker (which Tansu cannot rebind) are unlikely to come back soon. A port is
    free only until somebody binds it: the dev stack picks Serve's port, then the consumer's
    metrics port while Serve is still starting, and the kernel once offered the same port
    twice (the consumer's metrics server then answered the demo's ``POST /v1/score`` with 405).
    So a port handed out once is never handed out again by this process.

    >>> len({free_port() for _ in range(50)})
    50
    """
    while True:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
