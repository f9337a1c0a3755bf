"""Free TCP ports on this machine: a leaf utility for the dev stack, ``p13n serve`` and tests.

>>> 1024 < free_port() < 65536
True
"""

from __future__ import annotations

import socket
from contextlib import closing

__all__ = ["free_port"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it from the ephemeral range, so ports just released by an
    earlier broker (which Tansu cannot rebind) are unlikely to come back soon.
    """
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
