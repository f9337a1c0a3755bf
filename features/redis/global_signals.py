"""A tenant's global signals read, sans I/O: popularity, co-visitation rows and occurrences, and the
partitions' applied offsets — the commands and their replies parsed (layout: :mod:`features.redis.keys`).
The write of the signals is :meth:`features.redis.store.RedisStore.globals_call`.

Popularity is stored forward-decayed against the tenant's landmark (``global_meta``'s ``landmark``, s):
read at ``now`` a score is ``stored · exp(−(now − landmark)/τ)``.

>>> keys = KeyLayout("p")
>>> popularity_commands(keys, "t", [])  # ZMSCORE needs a member: a stand-in with a key
[('HGET', 'p:{t:g}:meta', 'landmark'), ('EXISTS', 'p:{t:g}:pop')]
>>> parse_popularity([b"0", [2.0, None]], 0, tau_s=1.0).tolist()
[2.0, 0.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.core.signals import cosine
from features.redis.commands import Command, score_pairs
from features.redis.keys import KeyLayout

__all__ = ["popularity_commands", "parse_popularity", "covisit_commands", "parse_covisit", "covisit_row_command",
           "parse_covisit_row", "occurrences_command", "parse_occurrences", "global_offsets_commands",
           "parse_global_offsets"]  # fmt: skip


def popularity_commands(keys: KeyLayout, tenant: str, item_ids: Sequence[str]) -> list[Command]:
    """Two commands: the landmark, then the items' stored scores (``ZMSCORE``; an ``EXISTS`` stand-in when there
    are no items: ZMSCORE needs a member, and a cluster client cannot route ECHO)."""
    scores = (("ZMSCORE", keys.popularity(tenant), *item_ids) if item_ids
              else ("EXISTS", keys.popularity(tenant)))  # fmt: skip
    return [("HGET", keys.global_meta(tenant), "landmark"), scores]


def parse_popularity(replies: Sequence, now_ms: int, *, tau_s: float) -> np.ndarray:
    """The items' popularity at ``now_ms`` from :func:`popularity_commands`' two replies (zeros when nothing is
    stored; an empty array for no items); ``tau_s``: ``state.popularity_tau_s``."""
    landmark, scores = replies
    if landmark is None or not isinstance(scores, list) or not scores:
        return np.zeros(len(scores) if isinstance(scores, list) else 0, dtype=np.float64)
    factor = np.exp(-(now_ms / 1000.0 - float(landmark)) / tau_s)
    return np.array([s or 0.0 for s in scores], dtype=np.float64) * factor


def covisit_commands(keys: KeyLayout, tenant: str, anchors: Sequence[str], candidates: Sequence[str]) -> list[Command]:
    """Each anchor's counts with the candidates (``ZMSCORE``), then the occurrences of anchors and candidates."""
    rows: list[Command] = [("ZMSCORE", keys.covisit(tenant, anchor), *candidates) for anchor in anchors]
    return [*rows, occurrences_command(keys, tenant, [*anchors, *candidates])]


def parse_covisit(rows: Sequence, anchors: int, candidates: int) -> np.ndarray:
    """The cosine matrix ``c(a, x) / sqrt(n(a)·n(x))`` (:func:`~features.core.signals.cosine`), shape
    (anchors, candidates), from :func:`covisit_commands`' replies (rows, then the occurrences).

    >>> parse_covisit([[4.0, None], [b"4", b"4", b"1"]], 1, 2).tolist()  # 4 / sqrt(4·4); never seen together: 0
    [[1.0, 0.0]]
    """
    if not rows or not anchors:
        return np.zeros((anchors, candidates), dtype=np.float64)
    counts = np.array([[c or 0.0 for c in row] for row in rows[:anchors]], dtype=np.float64)
    n = parse_occurrences(rows[anchors])
    return cosine(counts, n[:anchors], n[anchors:])


def covisit_row_command(keys: KeyLayout, tenant: str, item_id: str, *, best_first: bool = True) -> Command:
    """The item's whole co-visitation row with counts (raw ``ZREVRANGE … WITHSCORES``, best first; ``ZRANGE``,
    weakest first, with ``best_first=False``: the order Redis keeps, for readers that hold the row as it is)."""
    return ("ZREVRANGE" if best_first else "ZRANGE", keys.covisit(tenant, item_id), 0, -1, "WITHSCORES")


def parse_covisit_row(reply: list) -> dict[str, float]:
    """neighbour -> count from :func:`covisit_row_command`'s reply (RESP2 or RESP3).

    >>> parse_covisit_row([b"b", b"3", b"a", b"1"])
    {'b': 3.0, 'a': 1.0}
    """
    return dict(zip(*score_pairs(reply)))


def occurrences_command(keys: KeyLayout, tenant: str, item_ids: Sequence[str]) -> Command:
    """The items' occurrence counts ``n`` (``HMGET`` of the tenant's counts; ``item_ids`` not empty)."""
    return ("HMGET", keys.covisit_counts(tenant), *item_ids)


def parse_occurrences(reply: Sequence) -> np.ndarray:
    """Occurrence counts from :func:`occurrences_command`'s reply, 0 for an item never seen.

    >>> parse_occurrences([b"3", None]).tolist()
    [3.0, 0.0]
    """
    return np.array([float(v) if v is not None else 0.0 for v in reply], dtype=np.float64)


def global_offsets_commands(keys: KeyLayout, pairs: Sequence[tuple[str, int]]) -> list[Command]:
    """One ``HGET`` per (tenant, partition) of the last offset whose global deltas are applied."""
    return [("HGET", keys.global_offsets(tenant), str(partition)) for tenant, partition in pairs]


def parse_global_offsets(replies: Sequence, pairs: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """(tenant, partition) -> its applied offset, -1 if none, from :func:`global_offsets_commands`' replies.

    >>> parse_global_offsets([b"7", None], [("t", 0), ("t", 1)])
    {('t', 0): 7, ('t', 1): -1}
    """
    return {pair: int(v) if v is not None else -1 for pair, v in zip(pairs, replies)}
