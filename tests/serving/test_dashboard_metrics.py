"""Every metric name the Grafana dashboard's queries select is exported by a live process: a ``p13n consume``
subprocess and a ``p13n serve`` subprocess, scraped over HTTP after traffic that makes each series exist.

Ray exports a Serve metric only once it was recorded, so the Serve instance here gets what makes every
dashboard series appear: scores and rewrites (latency, stages, encoder batches, degraded answers), a budget
of 1 µs (no answer is that fast: a budget miss; 0.2 ms was, once the user's reads were cached) and a request while its Redis — this module's own — is down (Redis errors).
The consumer reads good, duplicate and malformed events (applied, duplicate, dead-letter outcomes).
"""

from __future__ import annotations

import json
import urllib.request

import pytest

from p13n.dashboard import DASHBOARD, queries
from p13n.devstack import free_port, wait_until
from p13n.errors import ServiceError
from tests.serving.conftest import RedisServer, running_api
from tests.stream.test_consumer import Consumer, consumer_env, produce
from tests.test_dashboard import exported_names, metric_names

pytestmark = pytest.mark.slow


def dashboard_names() -> dict[str, set[str]]:
    """{metric name: the dashboard's queries that select it}."""
    out: dict[str, set[str]] = {}
    for expr in queries(json.loads(DASHBOARD.read_text())):
        for name in metric_names(expr):
            out.setdefault(name, set()).add(expr)
    return out


def scrape(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """Killed by the test: the session's serving Redis stays up for the other modules."""
    server = RedisServer(tmp_path_factory.mktemp("dashboard-redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def api(serving_config, fake_llm, own_redis, tmp_path_factory):
    with running_api(serving_config, fake_llm, tmp_path_factory.mktemp("serve-dashboard"),
                     P13N_REDIS_URL=own_redis.url) as service:  # fmt: skip
        yield service


def test_every_dashboard_metric_is_exported_by_a_live_process(api, own_redis, config, tmp_path):
    wanted = dashboard_names()
    consumer_side = {n for n in wanted if n.startswith("p13n_consumer_")}
    serve_side = set(wanted) - consumer_side
    assert consumer_side and serve_side and all(n.startswith("ray_p13n_") for n in serve_side)

    good = [json.dumps({"event_id": f"d{n}", "user_id": f"u{n % 3}", "type": "view", "item_id": f"i{n}",
                        "timestamp": 1_790_000_000_000 + n}).encode() for n in range(6)]  # fmt: skip
    produce(config, [*good, good[0], b"{not json"])  # a duplicate and a dead letter
    port = free_port()
    consumer = Consumer(consumer_env(config), tmp_path / "consumer.log", metrics_port=port)
    try:
        for n in range(12):
            body = {"user_id": "nobody", "candidates": [{"item_id": "a"}, {"item_id": "b"}], "budget_ms": 2000}
            assert api.call("POST", "/v1/score", body)[0] == 200
            assert api.call("POST", "/v1/rewrite", {"user_id": "nobody", "prompt": f"a question {n}"})[0] == 200
        status, quick, *_ = api.call("POST", "/v1/rewrite", {"user_id": "nobody", "prompt": "quick?", "budget_ms": 0.001})
        assert status == 200 and quick["timings_ms"]["total"] > 0.001, quick
        own_redis.kill()
        answer = api.call("POST", "/v1/score", {"user_id": "nobody", "candidates": [{"item_id": "a"}]})[1]
        assert "redis_unavailable" in answer["degraded"], answer

        absent: set[str] = set()

        def serve_has_all() -> bool:
            absent.clear()
            absent.update(serve_side - exported_names(scrape(api.metrics_url)))
            return not absent

        def consumer_done() -> bool:
            assert consumer.proc.poll() is None, consumer.log.read_text()[-2000:]
            text = scrape(f"http://127.0.0.1:{port}/metrics")
            return 'outcome="dead_letter"} 1.0' in text and 'outcome="duplicate"} 1.0' in text

        wait_until(consumer_done, timeout=90, what="the consumer's outcomes", interval=0.5)
        try:
            wait_until(serve_has_all, timeout=90, what="every Serve series", interval=1.0)
        except ServiceError as exc:
            raise AssertionError(f"Serve never exported {sorted(absent)}") from exc
        exported = exported_names(scrape(f"http://127.0.0.1:{port}/metrics")) | exported_names(scrape(api.metrics_url))
    finally:
        assert consumer.terminate() == 0, consumer.log.read_text()[-2000:]
    missing = {name: sorted(exprs) for name, exprs in wanted.items() if name not in exported}
    assert missing == {}
