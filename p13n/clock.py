"""The wall clock every p13n process reads, in the unit events carry: integer milliseconds since the epoch.

Code that needs "now" takes a ``Callable[[], int]`` defaulting to :func:`now_ms`, so a test injects its own
clock instead of sleeping.

>>> import time
>>> abs(now_ms() - time.time() * 1000) < 1000
True
"""

from __future__ import annotations

import time

__all__ = ["now_ms"]


def now_ms() -> int:
    """Milliseconds since the Unix epoch (UTC), as an ``int``."""
    return int(time.time() * 1000)
