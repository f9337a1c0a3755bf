"""The composed deployments: the Personalizer and the query encoder as their own deployments, called
through handles (``serving.personalizer = "deployment"``, ``serving.query_encoder = "deployment"``).

The answers must be the same as from ``features/`` called directly — the same tests as for the default
in-replica path run again here against this module's ``api`` — and a scrape must show the requests
going through both deployments.
"""

from __future__ import annotations

import urllib.request

import pytest

from p13n.devstack import wait_until
from tests.serving.conftest import running_api
from tests.serving.test_outages import test_user_endpoints_answer_503_while_redis_is_down
from tests.serving.test_api import (
    EQUALITY_BUDGET_MS,
    a_user,
    metric_total,
    prometheus_samples,
    test_rewrite_matches_features_called_directly,
    test_score_matches_features_called_directly,
)

pytestmark = pytest.mark.slow

__all__ = ["test_score_matches_features_called_directly", "test_rewrite_matches_features_called_directly",
           "test_user_endpoints_answer_503_while_redis_is_down"]  # the Personalizer's StoreUnavailable crosses the handle


@pytest.fixture(scope="module")
def api(serving_config, fake_llm, tmp_path_factory):
    with running_api(serving_config, fake_llm, tmp_path_factory.mktemp("serve-handles"),
                     P13N_SERVING_PERSONALIZER="deployment", P13N_SERVING_QUERY_ENCODER="deployment") as service:  # fmt: skip
        yield service


def test_requests_go_through_the_personalizer_and_encoder_deployments(api, seeded):
    user = a_user(seeded)
    for n in range(3):
        status, body, _ = api.call("POST", "/v1/rewrite", {"user_id": user, "prompt": f"weekend plans {n}?",
                                                           "budget_ms": EQUALITY_BUDGET_MS})  # fmt: skip
        assert status == 200 and body["degraded"] == [], body

    def counts() -> tuple[float, float]:
        with urllib.request.urlopen(api.metrics_url, timeout=5) as response:
            samples = prometheus_samples(response.read().decode())
        return (metric_total(samples, "ray_p13n_encoder_batch_size_count", deployment="Encoder"),
                metric_total(samples, "ray_serve_deployment_request_counter_total", deployment="Personalizer"))  # fmt: skip

    wait_until(lambda: min(counts()) >= 3, timeout=90, what="requests counted at both deployments", interval=1.0)
