"""What the accumulator contract suite (``tests/features/test_accumulator_contracts.py``) drives every accumulator
with: :class:`Contract`, folding in batches, and read-outs compared up to float rounding."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from p13n.config import StateConfig

HOUR_S = 3600.0
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
DIM = 4
HORIZONS = StateConfig().horizons  # session: 1 hour, long: 30 days
ITEMS = [f"i{n}" for n in range(8)]  # the item ids the contracts draw from

# ----------------------------------------------------------------------------------------------------------------
# comparing read-outs


def assert_close(a: Any, b: Any, *, rel: float = 1e-4, abs_: float = 1e-6, vector_rel: float = 0.0,
                 path: str = "") -> None:
    """Structural equality with floats (and float arrays) compared up to rounding; ``vector_rel`` adds an
    absolute tolerance of that share of an array's largest magnitude (a vector stored as float16 is exact to
    about 5e-4 of its largest component, not of each component)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_close(a[key], b[key], rel=rel, abs_=abs_, vector_rel=vector_rel, path=f"{path}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{path}: {a!r} != {b!r}"
        for n, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, rel=rel, abs_=abs_, vector_rel=vector_rel, path=f"{path}[{n}]")
    elif isinstance(a, np.ndarray):
        scale = float(np.max(np.abs(b))) if np.size(b) else 0.0
        np.testing.assert_allclose(a, b, rtol=rel, atol=abs_ + vector_rel * scale, err_msg=path)
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=rel, abs=abs_), f"{path}: {a} != {b}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def scaled(value: Any, factor: float) -> Any:
    """Every number of a read-out times ``factor`` (what an additive accumulator reads after a replay)."""
    if isinstance(value, dict):
        return {k: scaled(v, factor) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(scaled(v, factor) for v in value)
    if isinstance(value, np.ndarray):
        return value * factor
    if isinstance(value, float):
        return value * factor
    return value


# ----------------------------------------------------------------------------------------------------------------
# the contracts


@dataclass(frozen=True)
class Contract:
    """How the checks drive one accumulator. ``new(bounded)`` builds an empty state (``bounded``: with bounds
    small enough to bind); ``fold(state, batch)`` folds a batch in place; ``read(state, batch)`` is a
    comparable read-out at a fixed time after every observation of ``batch`` (the whole set folded);
    ``check_bounds(state, observations)`` asserts the bounds and what they keep."""

    name: str
    observations: st.SearchStrategy  # a list of distinct observations
    new: Callable[[bool], Any]
    fold: Callable[[Any, list], None]
    read: Callable[[Any, list], Any]
    check_bounds: Callable[[Any, list], None]
    replay: str  # "idempotent" or "additive"
    order_when_bounded: bool = False  # order independence holds with binding bounds too
    merge: Callable[[Any, Any], Any] | None = None
    codec: Callable[[Any], Any] | None = None  # state -> state decoded from its bytes
    codec_vector_rel: float = 0.0  # what the stored form rounds vectors to (share of the largest magnitude)
    rel: float = 1e-4


def now_s(observations: list, t_of: Callable[[Any], float]) -> float:
    return max((t_of(o) for o in observations), default=0.0) + 60.0


class Box:
    """A mutable holder for accumulators whose fold returns a new value."""

    def __init__(self, value: Any, limit: int) -> None:
        self.value, self.limit = value, limit


def folded(contract: Contract, observations: list, *, bounded: bool = False, batches: list[list] | None = None):
    """A new state of ``contract`` (``bounded``: with binding bounds) with ``batches`` folded (default: all
    ``observations`` as one batch)."""
    state = contract.new(bounded)
    for batch in batches if batches is not None else [observations]:
        contract.fold(state, batch)
    return state


def cut_batches(items: list, rnd) -> list[list]:
    """``items`` cut into consecutive batches of 1 to 6, sized by ``rnd``."""
    batches, at = [], 0
    while at < len(items):
        size = rnd.randint(1, 6)
        batches.append(items[at : at + size])
        at += size
    return batches
