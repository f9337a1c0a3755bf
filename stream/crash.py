"""Deterministic crash points for recovery tests: the consumer kills itself at a named point.

The random SIGKILLs of ``tests/stream/test_consumer.py`` land wherever the timer falls; these land
exactly at one step of the exactly-once protocol (the way bytewax's recovery tests abort at chosen
steps), so every step is known to be covered. Selected by the environment variable
``P13N_CRASH_AT=<point>`` or ``<point>:<n>`` (the n-th time the point is reached, default the
first); unset, nothing is armed and each point costs one attribute check.

At the point the process sends itself SIGKILL: no ``finally``, no flush, no commit, no goodbye to the
group — as a power cut. Points after a Redis write first wait for Redis to acknowledge what was
sent, so the crash lands after the write, not merely after the send.

========================================  ==================================================================
point                                     where
========================================  ==================================================================
``after_fold``                            a partition of a poll folded; none of its writes sent
``after_global_call``                     a popularity/co-visitation script call applied; the partition's
                                          later calls and its users' writes not sent
``after_user_writes``                     a partition's user writes applied; later partitions not sent
``after_redis_write_before_commit``       a poll settled in Redis, its dead letters flushed; offsets not
                                          committed
``after_commit``                          a poll's offsets committed
========================================  ==================================================================

>>> CrashPoints("after_commit:3").armed, CrashPoints(None).armed
(True, False)
>>> CrashPoints("after_lunch")
Traceback (most recent call last):
...
p13n.errors.ConfigError: P13N_CRASH_AT names no crash point: 'after_lunch' (one of after_fold, after_global_call, after_user_writes, after_redis_write_before_commit, after_commit)
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Mapping

from p13n.errors import ConfigError

__all__ = ["POINTS", "ENV", "CrashPoints", "NEVER"]

POINTS = ("after_fold", "after_global_call", "after_user_writes", "after_redis_write_before_commit", "after_commit")
ENV = "P13N_CRASH_AT"


class CrashPoints:
    """The one armed point (or none). ``spec`` is ``<point>`` or ``<point>:<n>``; raises
    :class:`~p13n.errors.ConfigError` for an unknown point or a count that is not a number from 1."""

    def __init__(self, spec: str | None = None) -> None:
        name, _, nth = (spec or "").partition(":")
        if name and name not in POINTS:
            raise ConfigError(f"{ENV} names no crash point: {name!r} (one of {', '.join(POINTS)})")
        if nth and not (nth.isdigit() and int(nth) >= 1):
            raise ConfigError(f"{ENV}: the count after ':' must be a number from 1, not {nth!r}")
        self.point = name or None
        self.nth = int(nth) if nth else 1
        self.armed = self.point is not None
        self.reached_count = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> CrashPoints:
        return cls(env.get(ENV))

    def reached(self, point: str, settle: Callable[[], object] | None = None) -> None:
        """Kill this process if ``point`` is the armed one, reached for the n-th time; ``settle`` first
        waits for what the point's writes sent. Call as ``if crash.armed: crash.reached(...)``."""
        if point != self.point:
            return
        self.reached_count += 1
        if self.reached_count < self.nth:
            return
        if settle is not None:
            settle()
        sys.stderr.write(f"crash point {point} reached ({self.nth}): killing this process\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


#: Nothing armed (the default of every constructor).
NEVER = CrashPoints()
