"""The command line and the embedded dev stack, driven as a user would: as subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from p13n.devstack import DevStack, iter_processes_of
from tests.conftest import REPO, clean_env

P13N = [sys.executable, "-m", "p13n.cli"]


def run(args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*P13N, *args], env=env, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout)


def test_help_is_available_for_every_command():
    for args in (["--help"], ["dev", "--help"], ["dev", "up", "--help"], ["produce", "--help"],
                 ["encoder", "export", "--help"], ["demo", "--help"], ["config", "check", "--help"]):  # fmt: skip
        result = run(args, clean_env())
        assert result.returncode == 0, (args, result.stderr)
        assert "usage: p13n" in result.stdout


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"P13N_KAFKA_PARTITIONS": "four"}, "$.kafka.partitions"),
        ({"P13N_STATE_EVENT_WEIGHTS": '{"teleport": 2}'}, "unknown event type 'teleport'"),
        ({"P13N_STATE_HORIZONS": '{"session": -5}'}, "state.horizons.session must be > 0"),
        ({"P13N_REDIS_URL": "http://nope"}, "redis.url must start with redis://"),
        ({"P13N_REDIS_PORTT": "1"}, "unknown field `portt`"),
        ({"P13N_NOPE_X": "1"}, "unknown environment variable P13N_NOPE_X"),
        ({"P13N_STATE_HORIZONS": "{not json"}, "P13N_STATE_HORIZONS: not valid JSON"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_code_2(env, needle, tmp_path):
    result = run(["config", "show"], clean_env(**env), cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("p13n: error: ")
    assert needle in lines[0]


def test_bad_config_file_names_the_field(tmp_path):
    path = tmp_path / "p13n.toml"
    path.write_text('[serving]\nmax_candidates = "lots"\n')
    result = run(["--config", str(path), "config", "show"], clean_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "$.serving.max_candidates" in result.stderr


def test_unreachable_redis_is_one_line_and_exit_code_2(tmp_path, servers):
    env = clean_env(P13N_REDIS_URL="redis://127.0.0.1:1/0", P13N_KAFKA_BOOTSTRAP=servers["kafka"])
    result = run(["config", "check"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "redis.url: cannot connect to redis://127.0.0.1:1/0" in result.stderr


def test_unreachable_redis_error_hides_the_password(tmp_path, servers):
    env = clean_env(P13N_REDIS_URL="redis://:hunter2-pw@127.0.0.1:1/0", P13N_KAFKA_BOOTSTRAP=servers["kafka"])
    result = run(["config", "check"], env, cwd=tmp_path)
    assert result.returncode == 2
    assert "redis.url: cannot connect to redis://:***@127.0.0.1:1/0" in result.stderr
    assert "hunter2-pw" not in result.stderr + result.stdout


def test_config_check_passes_against_live_servers(tmp_path, servers):
    env = clean_env(P13N_REDIS_URL=servers["redis"], P13N_KAFKA_BOOTSTRAP=servers["kafka"])
    result = run(["config", "check"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout


def test_dev_up_twice_starts_one_stack_and_down_leaves_nothing(tmp_path):
    state = tmp_path / "state"
    env = clean_env(P13N_DEV_STATE_DIR=str(state))
    first = run(["dev", "up"], env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    records = {r.name: r for r in DevStack(state).records()}
    assert set(records) == {"redis", "kafka", "consumer", "serve"}
    assert all(r.is_alive() for r in records.values())

    second = run(["dev", "up"], env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("already running") == 4
    assert {r.name: r.pid for r in DevStack(state).records()} == {n: r.pid for n, r in records.items()}
    brokers = [pid for pid in iter_processes_of(state) if "tansu" in os.readlink(f"/proc/{pid}/exe")]
    assert len(brokers) == 1

    status = run(["dev", "status"], env, cwd=tmp_path)
    assert status.returncode == 0 and records["kafka"].url in status.stdout

    down = run(["dev", "down"], env, cwd=tmp_path)
    assert down.returncode == 0, down.stderr
    assert "stopped: serve, consumer, kafka, redis" in down.stdout
    assert not any(r.is_alive() for r in records.values())
    assert list(iter_processes_of(state)) == []
    assert run(["dev", "status"], env, cwd=tmp_path).returncode == 3


def test_dev_status_shows_a_dead_service_and_exits_1(tmp_path):
    import signal

    from p13n.devstack import wait_until

    state = tmp_path / "state"
    env = clean_env(P13N_DEV_STATE_DIR=str(state))
    stack = DevStack(state)
    try:
        running, _ = stack.up(topics={"p13n.events": 1, "p13n.items": 1, "p13n.dlq": 1},
                              services=("redis", "kafka", "consumer"), env=env)  # fmt: skip
        healthy = run(["dev", "status"], env, cwd=tmp_path)
        assert healthy.returncode == 0, healthy.stderr
        assert healthy.stdout.count("running") == 3 and "DEAD" not in healthy.stdout

        consumer = running["consumer"]
        os.kill(consumer.pid, signal.SIGKILL)
        wait_until(lambda: not consumer.is_alive(), timeout=10, what="the consumer to die")
        status = run(["dev", "status"], env, cwd=tmp_path)
        assert status.returncode == 1, (status.stdout, status.stderr)
        lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
        assert set(lines) == {"redis", "kafka", "consumer"}
        assert "DEAD" in lines["consumer"] and str(consumer.pid) in lines["consumer"]
        assert all("running" in lines[name] for name in ("redis", "kafka"))
        assert "p13n: error: consumer not running" in status.stderr
    finally:
        stack.down()


def test_produce_publishes_valid_lines_and_reports_bad_ones(tmp_path, config):
    from kafka import KafkaConsumer

    good = {"event_id": "e1", "user_id": "u1", "type": "click", "item_id": "i1", "timestamp": 1767225600000}
    lines = [json.dumps(good), "{not json", json.dumps({**good, "event_id": "e2", "type": "teleport"}),
             json.dumps({**good, "event_id": "e3", "user_id": "u2"})]  # fmt: skip
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env = clean_env(P13N_KAFKA_BOOTSTRAP=config.kafka.bootstrap, P13N_KAFKA_EVENTS_TOPIC=config.kafka.events_topic,
                    P13N_REDIS_URL=config.redis.url)  # fmt: skip
    result = run(["produce", str(path)], env, cwd=tmp_path)
    assert result.returncode == 1  # some lines were rejected
    assert "sent 2 records" in result.stdout
    assert f"{path}:2: rejected: invalid_json" in result.stderr
    assert f"{path}:3: rejected: unknown_type" in result.stderr

    consumer = KafkaConsumer(config.kafka.events_topic, bootstrap_servers=config.kafka.bootstrap,
                             group_id=config.kafka.group_id, auto_offset_reset="earliest",
                             session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_interval_ms=5000)  # fmt: skip
    received = []
    try:
        for _ in range(60):
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(records)
            if len(received) >= 2:
                break
    finally:
        consumer.close()
    assert sorted((r.key, json.loads(r.value)["event_id"]) for r in received) == [
        (b"default/u1", "e1"),
        (b"default/u2", "e3"),
    ]


def test_missing_input_file_is_one_line_exit_2(tmp_path, servers):
    env = clean_env(P13N_KAFKA_BOOTSTRAP=servers["kafka"])
    result = run(["produce", str(tmp_path / "nope.jsonl")], env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"p13n: error: no such file: {tmp_path / 'nope.jsonl'}"


def test_demo_runs_end_to_end_and_says_how_to_stop(tmp_path):
    state = tmp_path / "state"
    env = clean_env(P13N_DEV_STATE_DIR=str(state))
    try:
        result = run(["demo", "--users", "12"], env, cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "the consumer folded" in out
        assert out.count("top 5 of") == 2 and out.count("prompt after") == 3
        assert "turns of conversation sent as message events" in out and "What the user said earlier" in out
        assert "was recalled; the answer:" in out
        assert "<user_context>" in out
        assert "stop it with: p13n dev down" in out
        assert "latency" in out and "/v1/score" in out and "/v1/rewrite" in out
        pages = re.findall(r"(http://\S+/ui/users/\S+)", out)  # the profile inspector, one page per user shown
        assert len(pages) == 2
        for page in pages:
            with urllib.request.urlopen(page, timeout=10) as response:
                assert response.status == 200 and b"/ui/inspector.js" in response.read()
        assert set(DevStack(state).status()) == {"redis", "kafka", "consumer", "serve"}  # left running, as promised
    finally:
        run(["dev", "down"], env, cwd=tmp_path)
    assert list(iter_processes_of(state)) == []
