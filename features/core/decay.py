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

__all__ = ["DecayedSum", "DecayedSumUpdates", "decay_factors", "SparseDecayedSum", "SUM_DTYPE"]

#: The vector sums are float32, as they are stored: a state read back from Redis is float32 anyway, and
#: the fold moves half the bytes (its cost is memory traffic over the users' sums, not arithmetic).
#: Decay factors and the weights (the normalisers) stay float64.
SUM_DTYPE = np.float32


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
    """Decayed sums of ``dim``-vectors (and of their weights) over ``len(taus)`` horizons.

    ``memo`` is free for whoever serialises the sums, ``(format, bytes)``; every update clears
    it, so a state that did not change since it was read need not be converted again.
    """

    __slots__ = ("taus", "sums", "weights", "t_ref", "memo")

    def __init__(self, taus: Sequence[float] | np.ndarray, dim: int) -> None:
        taus_arr = np.asarray(taus, dtype=np.float64)
        if taus_arr.ndim != 1 or taus_arr.size == 0:
            raise ValueError("taus must be a non-empty 1-d sequence")
        if not np.all(taus_arr > 0) or not np.all(np.isfinite(taus_arr)):
            raise ValueError(f"every tau must be finite and > 0, got {taus_arr.tolist()}")
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.taus = taus_arr
        self.sums = np.zeros((taus_arr.size, dim), dtype=SUM_DTYPE)
        self.weights: list[float] = [0.0] * taus_arr.size  # per horizon; Python floats, cheaper than numpy at this size
        self.t_ref: float | None = None
        self.memo: tuple[str, bytes] | None = None

    @classmethod
    def restore(cls, taus: np.ndarray, sums: np.ndarray, weights: Sequence[float], t_ref: float | None) -> DecayedSum:
        """Rebuild a state from its parts without re-validating ``taus`` (already validated once)."""
        state = cls.__new__(cls)
        state.taus, state.sums, state.weights, state.t_ref = taus, sums, [float(w) for w in weights], t_ref
        state.memo = None
        return state

    @classmethod
    def zeros(cls, taus: np.ndarray, dim: int) -> DecayedSum:
        """An empty state over already-validated ``taus`` (float64 array)."""
        return cls.restore(taus, np.zeros((taus.size, dim), dtype=SUM_DTYPE), [0.0] * taus.size, None)

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])

    @property
    def empty(self) -> bool:
        """True until the first event; a state that decayed to ~0 is *not* empty."""
        return self.t_ref is None

    def update(self, t: float, w: float, x: Sequence[float] | np.ndarray) -> None:
        """Fold one event (time ``t`` s, weight ``w``, vector ``x``)."""
        self.update_many([t], [w], [x])

    def update_many(self, ts: Sequence[float], ws: Sequence[float], xs: Sequence | np.ndarray) -> None:
        """Fold n events at once: times ``ts``, weights ``ws``, vectors ``xs`` (n × dim). Same result as n updates."""
        updates = DecayedSumUpdates()
        updates.add(self, ts, ws, xs)
        updates.apply()

    def update_one_hot(self, ts: Sequence[float], indices: Sequence[int]) -> None:
        """Like :meth:`update_many` with weight 1 and one-hot vectors ``e[indices]`` (e.g. hour of day)."""
        updates = DecayedSumUpdates()
        updates.add_one_hot(self, ts, indices)
        updates.apply()

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


class _Group:
    """Pending updates of states that share their horizons (the same ``taus`` array) and dimension."""

    __slots__ = ("taus", "states", "counts", "events")

    def __init__(self, taus: np.ndarray) -> None:
        self.taus = taus  # held, so the id() in the group key stays this array's for the group's life
        self.states: list[DecayedSum] = []
        self.counts: list[int] = []
        self.events: list[tuple[float, float, object]] = []  # (t, w, x), states' events back to back


class DecayedSumUpdates:
    """Updates of many :class:`DecayedSum` states, collected and then applied together.

    The consumer folds one or two events into each of hundreds of users per batch,
    where numpy's per-call overhead, not arithmetic, is the cost. Collected here, the
    decay factors of all events and states come from a couple of vectorised
    ``exp`` calls and the states' sums are updated as one array. The result is the
    same as updating each state on its own (and :meth:`DecayedSum.update_many` is
    exactly that: a batch of one). States are batched together when they share their
    ``taus`` array object and dimension (states built from one spec do).

    >>> a, b = DecayedSum([10.0], 2), DecayedSum([10.0], 2)
    >>> updates = DecayedSumUpdates()
    >>> updates.add_events(a, [(0.0, 1.0, [1.0, 0.0]), (10.0, 1.0, [0.0, 1.0])])
    >>> updates.add_events(b, [(5.0, 2.0, [1.0, 1.0])])
    >>> updates.apply()
    >>> a.read(10.0)[0].round(4).tolist(), b.t_ref
    ([[0.3679, 1.0]], 5.0)
    """

    _eyes: dict[int, np.ndarray] = {}

    def __init__(self) -> None:
        self._groups: dict[tuple[int, int], _Group] = {}
        self._seen: set[int] = set()

    def add_events(self, state: DecayedSum, events: Sequence[tuple[float, float, Sequence[float] | np.ndarray]]) -> None:
        """Queue ``(t, w, x)`` events for ``state``; each state at most once per :meth:`apply`."""
        if not events:
            return
        if id(state) in self._seen:
            raise ValueError("a state can be queued once per apply()")
        self._seen.add(id(state))
        taus = state.taus
        key = (id(taus), state.sums.shape[1])
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(taus)
        group.states.append(state)
        group.counts.append(len(events))
        group.events.extend(events)

    def add(self, state: DecayedSum, ts: Sequence[float], ws: Sequence[float], xs: Sequence | np.ndarray) -> None:
        """Queue events given as parallel sequences: times ``ts``, weights ``ws``, vectors ``xs``."""
        if not len(ts) == len(ws) == len(xs):
            raise ValueError(f"ts, ws and xs differ in length ({len(ts)}, {len(ws)}, {len(xs)})")
        self.add_events(state, list(zip(ts, ws, xs)))

    @classmethod
    def one_hot(cls, dim: int, index: int) -> np.ndarray:
        """The shared, read-only ``dim``-vector that is 1 at ``index`` (e.g. hour of day of 24).

        >>> DecayedSumUpdates.one_hot(3, 1).tolist()
        [0.0, 1.0, 0.0]
        """
        eye = cls._eyes.get(dim)
        if eye is None:
            eye = np.eye(dim)
            eye.flags.writeable = False
            cls._eyes[dim] = eye
        return eye[index]

    def add_one_hot(self, state: DecayedSum, ts: Sequence[float], indices: Sequence[int]) -> None:
        """Queue weight-1 events whose vectors are one-hot at ``indices`` (e.g. hour of day)."""
        dim = state.sums.shape[1]
        self.add_events(state, [(t, 1.0, self.one_hot(dim, i)) for t, i in zip(ts, indices)])

    def apply(self) -> None:
        """Fold everything queued into its state; the queue is empty afterwards."""
        groups, self._groups, self._seen = self._groups, {}, set()
        for group in groups.values():
            self._apply_group(group)

    @staticmethod
    def _apply_group(group: _Group) -> None:
        states, counts = group.states, group.counts
        rates = 1.0 / group.taus
        t_list, w_list, x_list = zip(*group.events)
        ts = np.array(t_list, dtype=np.float64)
        t_old = np.array([-np.inf if s.t_ref is None else s.t_ref for s in states])
        if len(ts) == len(states):  # one event per state: no segments to reduce
            starts = None
            t_new = np.maximum(t_old, ts)
            event_t_new = t_new
        else:
            starts = np.cumsum([0, *counts[:-1]])
            t_new = np.maximum(t_old, np.maximum.reduceat(ts, starts))
            event_t_new = np.repeat(t_new, counts)
        # per event and horizon: w·exp(−(t_ref − t)/τ) at the new t_ref; per state: how far the old part decays
        factors = np.array(w_list, dtype=np.float64)[:, None] * np.exp((ts - event_t_new)[:, None] * rates)
        carry = np.exp((t_old - t_new)[:, None] * rates)  # 0 for a state that was empty
        xs = np.array(x_list, dtype=SUM_DTYPE)
        added = factors.astype(SUM_DTYPE)[:, :, None] * xs[:, None, :]  # (events, H, dim)
        added_w = factors
        if starts is not None:
            added, added_w = _segment_sums(added, factors, starts, counts)  # (states, H, dim), (states, H)
        weights = (np.array([s.weights for s in states]) * carry + added_w).tolist()
        sums = np.array([s.sums for s in states])  # (states, H, dim): one gather, two vectorised operations
        sums *= carry.astype(SUM_DTYPE)[:, :, None]
        sums += added
        for state, new_sums, new_weights, t_ref in zip(states, sums, weights, t_new.tolist()):
            np.copyto(state.sums, new_sums)  # copied back: a view would keep the whole batch array alive
            state.weights = new_weights
            state.t_ref = t_ref
            state.memo = None


_MAX_ROUNDS = 16  # a state with more events in one batch: one reduceat instead of that many small rounds


def _segment_sums(
    added: np.ndarray, factors: np.ndarray, starts: np.ndarray, counts: list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Sums of consecutive runs of rows (run i starts at ``starts[i]``, ``counts[i]`` long) of both arrays.

    ``np.add.reduceat`` over a 3-d array is slow (~1 ms for a few hundred rows here); states
    rarely have more than a few events in a batch, so the rows are added round by round —
    the first event of every state, then each state's second, … — where a round touches
    each state at most once. Same summation order as ``reduceat``.

    >>> a = np.arange(5.0)[:, None, None]; f = np.arange(5.0)[:, None]
    >>> sums, fsums = _segment_sums(a, f, np.array([0, 3]), [3, 2])
    >>> sums.ravel().tolist(), fsums.ravel().tolist()
    ([3.0, 7.0], [3.0, 7.0])
    """
    rounds = max(counts)
    if rounds > _MAX_ROUNDS:
        return np.add.reduceat(added, starts, axis=0), np.add.reduceat(factors, starts, axis=0)
    sums, fsums = added[starts], factors[starts]
    owner = np.repeat(np.arange(len(counts)), counts)
    rank = np.arange(len(owner)) - starts[owner]
    for r in range(1, rounds):
        rows = np.flatnonzero(rank == r)
        at = owner[rows]
        sums[at] += added[rows]
        fsums[at] += factors[rows]
    return sums, fsums


class SparseDecayedSum:
    """Decayed scalar sums keyed by string (attribute values, event types), one time constant.

    ``values`` are the sums at a landmark time ``t_ref`` (forward decay): an observation at
    ``t`` adds ``amount·exp((t − t_ref)/τ)``, so folding touches only the observed keys.
    The landmark moves to the newest observation only once that is more than
    ``τ·RESCALE_AFTER`` ahead (one pass over the values then), which keeps every
    stored number within a factor ``exp(RESCALE_AFTER)`` of its value at the newest time
    (float64 keeps its relative precision at any such scale; the bound only keeps
    numbers far from overflow and readable).

    Bounded to ``max_keys``: after an update the weakest keys (by magnitude, the same
    order at any time) are dropped, which is the one place where order can matter — only
    for keys that are near zero anyway.

    >>> prefs = SparseDecayedSum(tau=3600.0, max_keys=2)
    >>> prefs.add(0.0, {"category=jazz": 2.0, "brand=Acme": 1.0})
    >>> prefs.add(3600.0, {"category=vegan": 1.5})
    >>> {k: round(v, 3) for k, v in prefs.read(now=3600.0).items()}
    {'category=vegan': 1.5, 'category=jazz': 0.736}
    """

    RESCALE_AFTER = 1.0

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
        self.add_many([(t, (key,), amount) for key, amount in amounts.items()])

    def add_many(self, observations: Sequence[tuple[float, Sequence[str], float]]) -> None:
        """Add ``(t, keys, amount)`` observations (each key gains ``amount`` at ``t``), bounding once at the end."""
        if not observations:
            return
        t_max = max([o[0] for o in observations])
        if self.t_ref is None:
            self.t_ref = t_max
        elif t_max - self.t_ref > self.tau * self.RESCALE_AFTER:
            carry = math.exp(-(t_max - self.t_ref) / self.tau)
            self.values = {k: v * carry for k, v in self.values.items()}
            self.t_ref = t_max
        values, t_ref, tau = self.values, self.t_ref, self.tau
        get = values.get
        for t, keys, amount in observations:
            amount *= math.exp((t - t_ref) / tau)
            for key in keys:
                values[key] = get(key, 0.0) + amount
        if len(values) > self.max_keys:
            keep = sorted(values.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[: self.max_keys]
            self.values = dict(keep)

    def read(self, now: float) -> dict[str, float]:
        """Values decayed to ``now``, strongest first (read before ``t_ref``: the values at ``t_ref``)."""
        if self.t_ref is None:
            return {}
        carry = math.exp(-max(0.0, now - self.t_ref) / self.tau)
        return {k: v * carry for k, v in sorted(self.values.items(), key=lambda kv: (-abs(kv[1]), kv[0]))}
