"""Two ``p13n serve`` instances on one machine, each answering with its own configuration.

Before each instance had its own ports, Ray Serve's fallback proxy of every instance listened on
127.0.0.1:8500 with ``SO_REUSEPORT``; an instance's HAProxy sends requests there until the app's
replica passes its health checks, so a freshly started instance answered most requests with the
other instance's configuration (401 "unknown API key" with its own key).
"""

from __future__ import annotations

import json
from collections import Counter

from tests.serving.conftest import running_api

REQUESTS = 40


def test_two_instances_each_answer_with_their_own_configuration(serving_config, fake_llm, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    keys = {"a": "key-instance-a", "b": "key-instance-b"}
    own_keys = {name: json.dumps({keys[name]: tenant}) for name, tenant in (("a", "shop"), ("b", "news"))}
    with running_api(serving_config, fake_llm, tmp_path / "a", P13N_SERVING_API_KEYS=own_keys["a"]) as a:
        # the second instance starts while the first serves: the moment the old fixed ports were shared
        with running_api(serving_config, fake_llm, tmp_path / "b", P13N_SERVING_API_KEYS=own_keys["b"]) as b:
            for name, api in (("b", b), ("a", a), ("b", b)):
                other = keys["a" if name == "b" else "b"]
                own = Counter(api.call("GET", "/v1/users/nobody", key=keys[name])[0] for _ in range(REQUESTS))
                foreign = [api.call("GET", "/v1/users/nobody", key=other) for _ in range(REQUESTS // 4)]
                # an unknown user of a known tenant is 404; 401 would mean the other instance's key list answered
                assert own == {404: REQUESTS}, (name, own)
                assert all(status == 401 and "unknown API key" in json.dumps(body) for status, body, _ in foreign), (
                    name, foreign[:3])  # fmt: skip
