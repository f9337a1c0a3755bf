"""The reads of ``/v1/score``: the user's state from Redis, the candidates and global signals from a held table.

Per tenant, one :class:`~features.core.signal_cache.SignalTable` holds, with bounded staleness, what changes
slowly and is shared by every user:

* items (vector, attribute keys; or "not stored") for ``consumer.item_cache_ttl_s`` (60 s): a catalog change
  shows in scores at most that late (``consumer.item_cache_size`` items at most: past it the tenant's table
  starts afresh; 0 reads items on every request);
* co-visitation rows and occurrence counts for ``COVISIT_TTL_S`` (30 s);
* popularity scores for ``POPULARITY_TTL_S`` (5 s), relative to the tenant's landmark, which is read on every
  request, so a rescale is never mixed with older scores (every score is read again).

Each entry's expiry is spread by ``HOLD_JITTER`` (taken as read up to 20% of its time to live earlier), so what a
request or a cold start read together is not all read again in the same second.

A warm request is one round trip (``HGET`` the user's state, ``HGET`` the landmark, ``ZMSCORE`` of the
candidates whose popularity expired or an ``EXISTS`` stand-in, ``HMGET`` of items not held), plus one for co-visitation rows and counts
not held once the user's history names the anchors. The commands go raw (:mod:`serving.raw_reads`), except on
a Redis Cluster (its client's pipeline). The answers are those of
:meth:`~features.redis.store.RedisStore.read_request` and :meth:`~features.redis.store.RedisStore.covisit_matrix`
for the same Redis contents (``tests/serving/reference.py`` computes them that way).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from features.core.signal_cache import SignalTable
from features.core.state import UserState
from features.core.state_codec import decode_state
from features.redis.commands import score_pairs
from features.redis.global_signals import covisit_row_command, occurrences_command, popularity_commands
from features.redis.request import request_commands
from features.redis.store import RedisStore
from p13n.config import Config
from serving.raw_reads import raw_reader

__all__ = ["ScoreReads", "HeldCandidates", "COVISIT_TTL_S", "POPULARITY_TTL_S", "HOLD_JITTER"]

# Co-visitation counts move slowly: rows and counts are trusted for 30 s (bounded staleness), which saves
# the round trip and the parse of up to 5 anchor rows of 100 scored members per request (at 5 s, most
# anchors of MovieLens users had expired before their user came back).
COVISIT_TTL_S = 30.0
# Popularity (forward-decayed, tau of days) is trusted for 5 s: a new item's first events show in its score at
# most 5 s late, and the ZMSCORE of ~100 candidates (~0.3 ms of CPU per /v1/score here) is read only for items
# not held; the landmark is read on every request, so a rescale is never mixed with older scores.
POPULARITY_TTL_S = 5.0
HOLD_JITTER = 0.2


class HeldCandidates(NamedTuple):
    """The candidates as held when read: table ids (n,), vectors (n, dim) float32, whether each has a vector (n,),
    attribute-key numbers (n, w) and popularity at the request's time (n,)."""

    ids: np.ndarray
    vectors: np.ndarray
    has_vector: np.ndarray
    key_index: np.ndarray
    popularity: np.ndarray


def _floats(reply: list) -> list[float | None]:
    """``ZMSCORE`` / ``HMGET`` replies as floats (None stays None), as redis-py's ``ZMSCORE`` callback parses them.

    >>> _floats([b"1.5", None, 2.0])
    [1.5, None, 2.0]
    """
    return [None if value is None else float(value) for value in reply]


class ScoreReads:
    """The score path's reads for one process (a Serve replica); ``store`` gives the key layout and decoding."""

    def __init__(self, client, store: RedisStore, config: Config, *, jitter: float = HOLD_JITTER) -> None:
        self.client = client
        self.store = store
        self.keys = store.keys
        self.config = config
        self.jitter = jitter
        self.raw = raw_reader(client, config.redis.max_connections)
        self.tables: dict[str, SignalTable] = {}  # tenant -> its held items and signals

    def table(self, tenant: str) -> SignalTable:
        table = self.tables.get(tenant)
        if table is None or table.full:  # a fresh table: requests in flight keep the ids of the old one
            held = self.config.consumer.item_cache_size  # 0: items are read on every request
            item_ttl_s = self.config.consumer.item_cache_ttl_s if held else 0.0
            table = self.tables[tenant] = SignalTable(COVISIT_TTL_S, popularity_ttl_s=POPULARITY_TTL_S,
                                                      item_ttl_s=item_ttl_s, dim=self.store.dim,
                                                      max_held=held or 100_000, jitter=self.jitter)  # fmt: skip
        return table

    async def execute(self, commands: Sequence[tuple]) -> list:
        """Replies of raw ``commands`` in one round trip; raises the first error among them (as a pipeline does):
        a command's ``ResponseError``, or on a cluster the ``ConnectionError`` its pipeline puts in place of the
        replies of a node that is down."""
        if self.raw is not None:
            replies = await self.raw.execute(commands)
        else:
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def read(self, table: SignalTable, tenant: str, user_id: str, ids: Sequence[str],
                   now_ms: int) -> tuple[UserState | None, HeldCandidates]:  # fmt: skip
        """The user's state (None: unknown) and the candidates ``ids`` at ``now_ms``."""
        item_ids = table.ids(ids)
        fetch = table.stale_items(ids, item_ids)
        unread_at = table.stale_popularity_at(item_ids).tolist()
        unread = [ids[n] for n in unread_at]
        replies = await self.execute(request_commands(self.keys, tenant, user_id, unread, fetch))
        blob, raw_landmark = replies[0], replies[1]
        landmark = float(raw_landmark) if raw_landmark is not None else None
        table.put_popularity(unread, _floats(replies[2]) if unread else [], landmark, item_ids[unread_at])
        if fetch:
            table.put_items(fetch, self.store.parse_items(replies[3:], fetch))
        vectors, has_vector, key_index = table.candidates(item_ids)
        user = decode_state(blob, self.store.spec) if blob is not None else None
        popularity = await self._popularity(table, tenant, ids, item_ids, landmark, now_ms)
        return user, HeldCandidates(item_ids, vectors, has_vector, key_index, popularity)

    async def _popularity(self, table: SignalTable, tenant: str, ids: Sequence[str], item_ids: np.ndarray,
                          landmark: float | None, now_ms: int) -> np.ndarray:  # fmt: skip
        """The candidates' popularity at ``now_ms`` from the held scores (as ``RedisStore.parse_request`` computes
        it); when the landmark moved since some were read, all are read again."""
        if landmark is None or not ids:
            return np.zeros(len(ids), dtype=np.float64)
        stored = table.popularity(item_ids, landmark)
        if stored is None:
            raw_landmark, raw_scores = await self.execute(popularity_commands(self.keys, tenant, ids))
            landmark = float(raw_landmark) if raw_landmark is not None else None
            scores = _floats(raw_scores)
            table.put_popularity(ids, scores, landmark)
            if landmark is None:
                return np.zeros(len(ids), dtype=np.float64)
            stored = np.array([s or 0.0 for s in scores], dtype=np.float64)
        factor = np.exp(-(now_ms / 1000.0 - landmark) / self.config.state.popularity_tau_s)
        return stored * factor

    async def covisit(self, table: SignalTable, tenant: str, anchors: Sequence[str], ids: Sequence[str],
                      item_ids: np.ndarray) -> np.ndarray:  # fmt: skip
        """Cosine co-visitation (:func:`~features.core.signals.cosine`) of ``anchors`` × the candidates ``ids``
        (their table ids ``item_ids``); each anchor's (top-M bounded) row and each item's occurrence count are
        held for ``COVISIT_TTL_S``, so hot anchors and items cost no round trip."""
        if not anchors or not ids:
            return np.zeros((len(anchors), len(ids)))
        anchor_ids = table.ids(anchors)
        every = np.concatenate([anchor_ids, item_ids])
        missing = table.stale_rows(anchors, anchor_ids)
        uncounted = table.stale_counts([*anchors, *ids], every)
        if missing or uncounted:
            commands = [covisit_row_command(self.keys, tenant, anchor, best_first=False) for anchor in missing]
            if uncounted:
                commands.append(occurrences_command(self.keys, tenant, uncounted))
            replies = await self.execute(commands)
            for anchor, reply in zip(missing, replies):
                table.put_row(anchor, *score_pairs(reply))
            if uncounted:
                table.put_counts(uncounted, replies[len(missing)])
        return table.cosine(anchors, ids, every)

    async def close(self) -> None:
        if self.raw is not None:
            await self.raw.close()
