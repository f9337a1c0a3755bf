"""Exponentially decayed sums in event time, over several horizons (DESIGN.md §3).

State is ``(sums, weights, t_ref)``; an event ``(t, w, x)`` is folded in as::

    t > t_ref:  S ← S·exp(−(t − t_ref)/τ) + w·x ;  t_ref ← t
    otherwise:  S ← S + w·exp(−(t_ref − t)/τ)·x

so ``S = Σ wᵢ·exp(−(t_ref − tᵢ)/τ)·xᵢ`` with ``t_ref = max tᵢ`` whatever the arrival
order: replays in any order, late events and merges of partial states are exact
(up to float rounding). Times are seconds (float); time constants τ are seconds.

An empty state is explicit (``t_ref is None``), never inferred from zeros.

>>> s = DecayedSum(taus=[10.0, 1000.0], dim=2)
>>> s.update(t=100.0, w=1.0, x=[1.0, 0.0])
>>> s.update(t=90.0, w=1.0, x=[0.0, 1.0])        # 10 s late: weighted by exp(-10/τ)
>>> sums, weights = s.read(now=100.0)
>>> [round(float(v), 4) for v in sums[0]]         # τ = 10 s: the late event counts e^-1
[1.0, 0.3679]
>>> round(float(weights[1]), 4)                   # τ = 1000 s: it counts almost fully
1.99
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["DecayedSum", "decay_factors", "SparseDecayedSum"]


def decay_factors(taus: np.ndarray, age: float | np.ndarray) -> np.ndarray:
    """``exp(-age/τ)`` per horizon; ``age`` may be a vector (result shape (H, n)).

    >>> decay_factors(np.array([1.0, 2.0]), 2.0).round(4).tolist()
    [0.1353, 0.3679]
    """
    age_arr = np.asarray(age, dtype=np.float64)
    if age_arr.ndim == 0:
        return np.exp(-float(age_arr) / taus)
    return np.exp(-age_arr[None, :] / taus[:, None])


class DecayedSum:
    """Decayed sums of ``dim``-vectors (and of their weights) over ``len(taus)`` horizons."""

    __slots__ = ("taus", "sums", "weights", "t_ref", "_rates")

    def __init__(self, taus: Sequence[float] | np.ndarray, dim: int) -> None:
        taus_arr = np.asarray(taus, dtype=np.float64)
        if taus_arr.ndim != 1 or taus_arr.size == 0:
            raise ValueError("taus must be a non-empty 1-d sequence")
        if not np.all(taus_arr > 0) or not np.all(np.isfinite(taus_arr)):
            raise ValueError(f"every tau must be finite and > 0, got {taus_arr.tolist()}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.taus = taus_arr
        self.sums = np.zeros((taus_arr.size, dim), dtype=np.float64)
        self.weights: list[float] = [0.0] * taus_arr.size  # per horizon; Python floats, cheaper than numpy at this size
        self.t_ref: float | None = None
        self._rates = (1.0 / taus_arr).tolist()

    @classmethod
    def restore(cls, taus: np.ndarray, sums: np.ndarray, weights: Sequence[float], t_ref: float | None) -> DecayedSum:
        """Rebuild a state from its parts without re-validating ``taus`` (already validated once)."""
        state = cls.__new__(cls)
        state.taus, state.sums, state.weights, state.t_ref = taus, sums, [float(w) for w in weights], t_ref
        state._rates = (1.0 / taus).tolist()
        return state

    @classmethod
    def zeros(cls, taus: np.ndarray, dim: int) -> DecayedSum:
        """An empty state over already-validated ``taus`` (float64 array)."""
        return cls.restore(taus, np.zeros((taus.size, dim)), [0.0] * taus.size, None)

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    @property
    def empty(self) -> bool:
        """True until the first event; a state that decayed to ~0 is *not* empty."""
        return self.t_ref is None

    def update(self, t: float, w: float, x: Sequence[float] | np.ndarray) -> None:
        """Fold one event (time ``t`` s, weight ``w``, vector ``x``)."""
        self.update_many([t], [w], [np.asarray(x, dtype=np.float64)])

    # The consumer folds one or two events per user and batch, so the per-event factors are
    # computed with ``math`` on Python floats (numpy's per-call overhead would dominate); numpy
    # only touches the (H, dim) sums.
    def _advance(self, t_new: float) -> float:
        """Move ``t_ref`` forward to ``t_new`` (decaying what is there); returns the new ``t_ref``."""
        t_ref = self.t_ref
        if t_ref is None:
            self.t_ref = t_new
            return t_new
        if t_new <= t_ref:
            return t_ref
        carry = [math.exp((t_ref - t_new) * r) for r in self._rates]
        if len(carry) == 1:
            self.sums *= carry[0]
        else:
            self.sums *= np.array(carry)[:, None]
        self.weights = [w * c for w, c in zip(self.weights, carry)]
        self.t_ref = t_new
        return t_new

    def _factors(self, ts: Sequence[float], ws: Sequence[float]) -> list[list[float]]:
        """``wᵢ·exp(−(t_ref − tᵢ)/τ)`` per horizon and event, after advancing to the newest ``tᵢ``."""
        t_ref = self._advance(max(ts))
        return [[w * math.exp((t - t_ref) * r) for t, w in zip(ts, ws)] for r in self._rates]

    def update_many(self, ts: Sequence[float], ws: Sequence[float], xs: Sequence | np.ndarray) -> None:
        """Fold n events at once: times ``ts``, weights ``ws``, vectors ``xs`` (n × dim). Same result as n updates."""
        if len(ts) == 0:
            return
        factors = self._factors([float(t) for t in ts], [float(w) for w in ws])
        if len(ts) == 1:
            self.sums += np.multiply.outer([row[0] for row in factors], np.asarray(xs[0], dtype=np.float64))
        else:
            self.sums += np.array(factors) @ np.asarray(xs, dtype=np.float64)
        self.weights = [w + math.fsum(row) for w, row in zip(self.weights, factors)]

    def update_one_hot(self, ts: Sequence[float], indices: Sequence[int]) -> None:
        """Like :meth:`update_many` with weight 1 and one-hot vectors ``e[indices]`` (e.g. hour of day)."""
        if len(ts) == 0:
            return
        factors = self._factors([float(t) for t in ts], [1.0] * len(ts))
        sums = self.sums
        for h, row in enumerate(factors):
            for index, f in zip(indices, row):
                sums[h, index] += f
        self.weights = [w + math.fsum(row) for w, row in zip(self.weights, factors)]

    def read(self, now: float) -> tuple[np.ndarray, np.ndarray]:
        """(sums (H, dim), weights (H,)) decayed to ``now``; zeros if empty.

        Reading before ``t_ref`` (a clock behind the newest event) does not amplify: factor 1.
        """
        if self.t_ref is None:
            return np.zeros_like(self.sums), np.zeros(len(self.weights))
        carry = decay_factors(self.taus, max(0.0, now - self.t_ref))
        return self.sums * carry[:, None], np.array(self.weights) * carry

    def merge(self, other: DecayedSum) -> DecayedSum:
        """A new state equal to folding both event sets into one (same taus and dim required)."""
        if not np.array_equal(self.taus, other.taus) or self.dim != other.dim:
            raise ValueError("can only merge states with the same taus and dim")
        merged = DecayedSum(self.taus, self.dim)
        refs = [s.t_ref for s in (self, other) if s.t_ref is not None]
        if not refs:
            return merged
        merged.t_ref = max(refs)
        for part in (self, other):
            if part.t_ref is not None:
                carry = decay_factors(self.taus, merged.t_ref - part.t_ref)
                merged.sums += part.sums * carry[:, None]
                merged.weights = [m + w * c for m, w, c in zip(merged.weights, part.weights, carry.tolist())]
        return merged

    def copy(self) -> DecayedSum:
        return DecayedSum.restore(self.taus, self.sums.copy(), self.weights, self.t_ref)


class SparseDecayedSum:
    """Decayed scalar sums keyed by string (attribute values, event types), one time constant.

    ``values`` are the sums at a landmark time ``t_ref`` (forward decay): an observation at
    ``t`` adds ``amount·exp((t − t_ref)/τ)``, so folding touches only the observed keys.
    The landmark moves to the newest observation only once that is more than
    ``τ·RESCALE_AFTER`` ahead (one pass over the values then), which keeps every
    stored number within a factor ``exp(RESCALE_AFTER)`` of its value at the newest time.

    Bounded to ``max_keys``: after an update the weakest keys (by magnitude, the same
    order at any time) are dropped, which is the one place where order can matter — only
    for keys that are near zero anyway.

    >>> prefs = SparseDecayedSum(tau=3600.0, max_keys=2)
    >>> prefs.add(0.0, {"category=jazz": 2.0, "brand=Acme": 1.0})
    >>> prefs.add(3600.0, {"category=vegan": 1.5})
    >>> {k: round(v, 3) for k, v in prefs.read(now=3600.0).items()}
    {'category=vegan': 1.5, 'category=jazz': 0.736}
    """

    RESCALE_AFTER = 0.125

    __slots__ = ("tau", "max_keys", "values", "t_ref")

    def __init__(self, tau: float, max_keys: int) -> None:
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.tau = float(tau)
        self.max_keys = max_keys
        self.values: dict[str, float] = {}
        self.t_ref: float | None = None

    def add(self, t: float, amounts: dict[str, float]) -> None:
        """Add ``amounts`` observed at time ``t``."""
        self.add_many([(t, amounts)])

    def add_many(self, observations: list[tuple[float, dict[str, float]]]) -> None:
        """Add several ``(t, amounts)`` observations at once (bounding once, at the end)."""
        if not observations:
            return
        t_max = max(t for t, _ in observations)
        if self.t_ref is None:
            self.t_ref = t_max
        elif t_max - self.t_ref > self.tau * self.RESCALE_AFTER:
            carry = math.exp(-(t_max - self.t_ref) / self.tau)
            self.values = {k: v * carry for k, v in self.values.items()}
            self.t_ref = t_max
        values, t_ref, tau = self.values, self.t_ref, self.tau
        for t, amounts in observations:
            factor = math.exp((t - t_ref) / tau)
            for key, amount in amounts.items():
                values[key] = values.get(key, 0.0) + amount * factor
        if len(values) > self.max_keys:
            keep = sorted(values.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[: self.max_keys]
            self.values = dict(keep)

    def read(self, now: float) -> dict[str, float]:
        """Values decayed to ``now``, strongest first (read before ``t_ref``: the values at ``t_ref``)."""
        if self.t_ref is None:
            return {}
        carry = math.exp(-max(0.0, now - self.t_ref) / self.tau)
        return {k: v * carry for k, v in sorted(self.values.items(), key=lambda kv: (-abs(kv[1]), kv[0]))}
