"""Session-wide real servers, and per-test isolation.

The embedded Redis-compatible server and Kafka-compatible broker are started
once per session with the same code as ``p13n dev up`` (polling for readiness,
no fixed sleeps). When ``P13N_REDIS_URL`` / ``P13N_KAFKA_BOOTSTRAP`` are set, the
servers they name are used instead. Each test gets its own Redis key prefix
and topic names, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from p13n.config import Config
from p13n.devstack import DevStack

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """{"redis": url, "kafka": bootstrap} of the servers this session tests against."""
    found = {"redis": os.environ.get("P13N_REDIS_URL"), "kafka": os.environ.get("P13N_KAFKA_BOOTSTRAP")}
    missing = tuple(name for name, url in found.items() if not url)
    stack = DevStack(tmp_path_factory.mktemp("session-stack"))
    if missing:
        running, _ = stack.up(services=missing)
        found.update({name: running[name].url for name in missing})
    yield {name: str(url) for name, url in found.items()}
    stack.down()


@pytest.fixture
def test_id() -> str:
    """A short id unique to this test, for key prefixes and topic names."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def config(servers: dict[str, str], test_id: str, request: pytest.FixtureRequest) -> Config:
    """Configuration pointing at the session's servers, with a private prefix and private topics.

    A test marked ``@pytest.mark.config(section={...})`` gets those settings on top."""
    marker = request.node.get_closest_marker("config")
    extra = marker.kwargs if marker else {}
    return Config.from_sources(
        env={},
        overrides={
            **extra,
            "redis": {"url": servers["redis"], "prefix": f"t{test_id}"},
            "kafka": {
                "bootstrap": servers["kafka"],
                "events_topic": f"events-{test_id}",
                "items_topic": f"items-{test_id}",
                "dlq_topic": f"dlq-{test_id}",
                "group_id": f"group-{test_id}",
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "max_poll_interval_ms": 5000,
            },
        },
    )


@pytest.fixture
def redis_client(config: Config) -> Iterator:
    """A client of the session's Redis; the test's keys are deleted afterwards."""
    from p13n.connections import redis_client as make

    client = make(config.redis)
    yield client
    keys = list(client.scan_iter(match=f"{config.redis.prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


def clean_env(**extra: str) -> dict[str, str]:
    """The process environment without P13N_* variables, plus ``extra`` (for CLI subprocess tests)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("P13N_")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def encoder():
    """The exported ONNX encoder (int8), loaded once."""
    from features.encoder.runtime import Encoder, default_encoder_dir

    return Encoder.from_directory(default_encoder_dir())


@pytest.fixture(scope="session")
def consumer_encoder():
    """The encoder the consumer builds from the default configuration (int8-static, 2 threads:
    batch-independent vectors)."""
    from features.encoder.runtime import Encoder
    from p13n.config import EncoderConfig

    return Encoder.for_consumer(EncoderConfig())
