"""`p13n consume` killed at each named step of the exactly-once protocol (``stream.crash``), then restarted:
Redis must equal a clean replay, as after the random SIGKILLs of ``test_consumer.py`` — but here every step
is hit on purpose (the way bytewax's recovery tests abort at chosen steps)."""

from __future__ import annotations

import signal
import subprocess

import pytest

from features.redis.store import RedisStore
from stream.crash import POINTS
from tests.stream.replay import assert_matches_replay, valid_events
from tests.stream.test_consumer import Consumer, applied_events, consumer_env, produce, synthetic_lines, wait_for_all

pytestmark = [pytest.mark.slow, pytest.mark.config(state={"covisit_top_m": 1000})]

#: Each point with the time it is reached at which to die: late enough that earlier polls were applied
#: (and, for the per-partition points, inside a later poll), early enough that the stream is not done.
CRASHES = {
    "after_fold": 20,  # each poll reaches the per-partition points once per (tenant, partition): up to 8 times
    "after_global_call": 60,
    "after_user_writes": 12,
    "after_redis_write_before_commit": 3,
    "after_commit": 3,
}
#: Points whose n-th arrival comes after Redis acknowledged some user writes.
AFTER_USER_WRITES = {"after_user_writes", "after_redis_write_before_commit", "after_commit"}


@pytest.fixture
def store(redis_client, config, consumer_encoder) -> RedisStore:
    return RedisStore(redis_client, config, dim=consumer_encoder.dimension)


def test_every_crash_point_is_covered():
    assert set(CRASHES) == set(POINTS)


@pytest.mark.parametrize("point", list(CRASHES))
def test_a_kill_at_a_crash_point_then_a_restart_equals_a_clean_replay(point, config, store, consumer_encoder, tmp_path):
    lines = synthetic_lines(users=30, per_user=20, seed=17)  # ~600 events with duplicates and disorder
    events = valid_events(lines)
    produce(config, lines)
    # small polls and global calls: many polls, several global calls per partition
    env = consumer_env(config, P13N_CONSUMER_MAX_BATCH="40", P13N_CONSUMER_GLOBAL_DELTAS_PER_CALL="8")
    users = sorted({(e.tenant, e.user_id) for e in events})
    total = len({(e.tenant, e.user_id, e.event_id) for e in events})

    crashing = Consumer({**env, "P13N_CRASH_AT": f"{point}:{CRASHES[point]}"}, tmp_path / "crashing.log")
    try:
        code = crashing.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        crashing.kill()
        pytest.fail(f"the consumer never reached {point} {CRASHES[point]} times: {crashing.log.read_text()[-3000:]}")
    output = crashing.log.read_text()
    assert code == -signal.SIGKILL, output[-3000:]
    assert f"crash point {point} reached ({CRASHES[point]})" in output, output[-3000:]
    died_with = applied_events(store, users)
    assert died_with < total, "premise: the consumer died before the stream was applied"
    if point in AFTER_USER_WRITES:
        assert died_with > 0, "premise: some polls were applied before the kill"

    final = Consumer(env, tmp_path / "final.log")
    try:
        wait_for_all(store, events, timeout=180, consumers=[final])
        assert_matches_replay(store, events, consumer_encoder.encode)
    finally:
        code = final.terminate()
    assert code == 0, final.log.read_text()[-3000:]
