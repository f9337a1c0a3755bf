"""The offline evaluation's co-visitation is what the consumer stores, on a real MovieLens subset."""

from __future__ import annotations

import os

import pytest

from features.evaluation.replay import replay
from features.core.events import parse_event
from features.core.signals import CoVisitation
from features.redis.store import RedisStore
from p13n.connections import covisit_rows_warning, zset_listpack_entries
from p13n.devstack.servers import ZSET_LISTPACK_ENTRIES
from p13n.importers import import_movielens
from stream.processing import BatchProcessor
from stream.records import records_from_lines
from tests.conftest import REPO

TINY = REPO / "tests" / "data" / "movielens-tiny"
NOW_MS = 2_000_000_000_000


@pytest.mark.config(state={"covisit_top_m": 1000})
def test_eval_covisitation_equals_what_the_consumer_stores(config, redis_client, consumer_encoder, tmp_path):
    import_movielens(TINY, tmp_path, now_ms=NOW_MS)
    lines = (tmp_path / "events.jsonl").read_bytes().splitlines()
    store = RedisStore(redis_client, config, dim=consumer_encoder.dimension)
    processor = BatchProcessor(store, config, consumer_encoder.encode, clock_ms=lambda: NOW_MS)
    records = records_from_lines(lines, config.kafka.events_topic)
    for start in range(0, len(records), 300):  # batches, as a consumer polls them
        outcome = processor.process_events(records[start : start + 300])
        assert not outcome.dead_letters and outcome.applied == len(records[start : start + 300])

    offline = CoVisitation(config.state.covisit_top_m)
    events = [parse_event(line, now_ms=NOW_MS) for line in lines]
    replay(events, {}, config, min_events=len(events) + 1, covisitation=offline)  # no user held out: every event folded

    items = sorted({e.item_id for e in events})
    rows = {item: store.covisit_neighbours("default", item) for item in items}
    assert {i: r for i, r in rows.items() if r} == {i: offline.neighbours(i) for i in offline.counts if offline.counts[i]}
    assert store.covisit_occurrences("default", items).tolist() == offline.occurrences(items).tolist()
    assert offline.occurrences(items).sum() == len(events)  # every rating counts, a low one too
    widest = max(len(r) for r in rows.values())
    assert 100 < widest < config.state.covisit_top_m  # the wide window pairs many items, and no row is full


def test_full_covisit_rows_stay_compact_and_the_consumer_checks_the_redis_setting(config, redis_client):
    """A row of ``state.covisit_top_m`` neighbours stays a listpack on a server started as the dev stack starts
    it (``zset-max-listpack-entries`` 512); the consumer's start-up check names a setting below the row size."""
    top_m = config.state.covisit_top_m
    entries = zset_listpack_entries(redis_client)
    assert entries is not None
    if "P13N_REDIS_URL" not in os.environ:  # the session's own server, started by redis_argv
        assert entries == ZSET_LISTPACK_ENTRIES >= top_m
    store = RedisStore(redis_client, config, dim=4)
    assert store.apply_globals("default", 0, 0, [], [("x", f"item-{i:05d}") for i in range(top_m + 7)])
    row = store.keys.covisit("default", "x")
    assert redis_client.zcard(row) == top_m  # bounded: the 7 extra neighbours replaced the weakest
    encoding = redis_client.object("encoding", row)
    assert encoding == (b"listpack" if entries >= top_m else b"skiplist")
    if entries >= top_m:
        assert covisit_rows_warning(redis_client, top_m) is None
        assert redis_client.memory_usage(row, samples=0) < 20 * top_m  # ~14 B per 10-character neighbour
    warning = covisit_rows_warning(redis_client, entries + 1)
    assert warning is not None and f"zset-max-listpack-entries is {entries}" in warning
