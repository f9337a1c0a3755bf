"""The global-deltas script call: a contiguous offset range of one partition's popularity and co-visitation
deltas, packed for one :data:`~features.redis.scripts.APPLY_GLOBALS` EVAL (sans I/O: the caller sends it).

Popularity is aggregated here — per item ``Σ wᵢ·exp((tᵢ − t_max)/τ)`` at the item's latest time, which is
exactly what the forward-decay script would add event by event; co-visitation deltas are summed per
unordered pair by the script — so a call does one update per item and two per pair, whatever its size.

>>> from p13n.config import StateConfig
>>> script, keys, args = globals_call(KeyLayout("p"), StateConfig(), "t", 0, 7,
...                                   [("a", 1000, 1.0), ("a", 2000, 1.0)], [("b", ["a"], 1.0, "e1", 1.0)])
>>> keys
['p:{t:g}:pop', 'p:{t:g}:meta', 'p:{t:g}:off', 'p:{t:g}:cvn', 'p:{t:g}:cv:b', 'p:{t:g}:cv:a']
>>> pops, names, links = msgspec.msgpack.decode(args[5])
>>> pops[0], pops[1], round(pops[2], 6), names, links
('a', 2.0, 1.999998, ['b', 'a'], [1, 1.0, 1.0, 1, 2])
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import msgspec

from features.core.signals import RESCALE_EXPONENT
from features.redis.keys import KeyLayout
from features.redis.scripts import APPLY_GLOBALS
from p13n.config import StateConfig

__all__ = ["globals_call", "popularity_args", "covisit_args"]

_encoder = msgspec.msgpack.Encoder()


def globals_call(keys: KeyLayout, state: StateConfig, tenant: str, partition: int, offset: int,
                 popularity: Iterable[tuple], covisit_runs: Iterable[tuple], *,
                 force: bool = False) -> tuple[str, list, list]:  # fmt: skip
    """``(script, keys, args)`` adding a batch's popularity ``(item, ts_ms, weight, …)`` and co-visitation
    deltas once per (tenant, partition, offset). Co-visits come as runs ``(later, earlier items, delta,
    event_id, count)`` (:class:`~features.core.history.CovisitRun`): each earlier item and ``later`` gain
    ``delta`` in each other's row (a Space-Saving summary of ``state.covisit_top_m`` members), and
    ``later``'s occurrences gain ``count``.

    ``force`` repairs a call known not to have run (it failed): applied whatever the partition's offset.
    Non-finite deltas are sent as they are: the script rejects the call, naming them."""
    pop_args = popularity_args(popularity, state.popularity_tau_s)
    names, pair_args = covisit_args(covisit_runs)
    call_keys = [keys.popularity(tenant), keys.global_meta(tenant), keys.global_offsets(tenant),
                 keys.covisit_counts(tenant), *keys.covisits(tenant, names)]  # fmt: skip
    args = [partition, offset, state.popularity_tau_s, RESCALE_EXPONENT, state.covisit_top_m,
            _encoder.encode([pop_args, names, pair_args]), "1" if force else "0"]  # fmt: skip
    return (APPLY_GLOBALS, call_keys, args)


def popularity_args(popularity: Iterable[tuple], tau_s: float) -> list:
    """Flat ``[item, time s, weight, …]``: one triple per item, its deltas ``(item, ts_ms, weight, …)``
    summed at the item's latest time (NaN where the sum overflows: the script names it).

    >>> popularity_args([("a", 1000, 2.0), ("b", 3000, 1.0)], 60.0)
    ['a', 1.0, 2.0, 'b', 3.0, 1.0]
    """
    per_item: dict[str, list[tuple[float, float]]] = {}
    for delta in popularity:
        item_id, t, weight = delta[0], delta[1] / 1000.0, float(delta[2])
        seen = per_item.get(item_id)
        if seen is None:
            per_item[item_id] = [(t, weight)]
        else:
            seen.append((t, weight))
    out: list = []
    for item_id, obs in per_item.items():
        if len(obs) == 1:
            out += [item_id, *obs[0]]
            continue
        t_max = max([t for t, _ in obs])
        try:
            total = math.fsum([w * math.exp((t - t_max) / tau_s) for t, w in obs])
        except (OverflowError, ValueError):  # fsum raises on overflow and on inf - inf: the script names it
            total = math.nan
        out += [item_id, t_max, total]
    return out


def covisit_args(covisit_runs: Iterable[tuple]) -> tuple[list[str], list]:
    """The co-visited items (item k's row is the script's ``KEYS[4 + k]``) and, per run, flat: the later
    item's 1-based position, delta, count (0.0 when the run has none), n, the n earlier items' positions.

    >>> covisit_args([("c", ["a", "b"], 0.5, "e1", 1.0), ("a", ["c"], 1.0, "e2")])
    (['c', 'a', 'b'], [1, 0.5, 1.0, 2, 2, 3, 2, 1.0, 0.0, 1, 1])
    """
    names: dict[str, int] = {}  # item -> its 1-based position in the script's list
    position = names.get
    pair_args: list = []
    add = pair_args.extend
    for run in covisit_runs:
        later = position(run[0])
        if later is None:
            later = names[run[0]] = len(names) + 1
        earlier = run[1]
        add((later, float(run[2]), float(run[4]) if len(run) > 4 else 0.0, len(earlier)))
        for item in earlier:
            at = position(item)
            if at is None:
                at = names[item] = len(names) + 1
            pair_args.append(at)
    return list(names), pair_args
