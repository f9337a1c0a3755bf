"""Capped exponential backoff with full jitter (AWS architecture blog's "full jitter").

>>> import random
>>> b = Backoff(initial_s=0.1, max_s=1.0, rng=random.Random(0))
>>> delays = [b.next_delay() for _ in range(8)]
>>> all(0 <= d <= min(1.0, 0.1 * 2**n) for n, d in enumerate(delays))
True
>>> b.reset(); b.attempts
0
"""

from __future__ import annotations

import random

__all__ = ["Backoff"]


class Backoff:
    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("need 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng or random.Random()
        self.attempts = 0

    def next_delay(self) -> float:
        """Delay before the next retry: uniform in [0, min(max, initial·2^attempts)]."""
        ceiling = min(self.max_s, self.initial_s * (2**self.attempts))
        self.attempts += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempts = 0
