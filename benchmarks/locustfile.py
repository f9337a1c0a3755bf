"""Locust cross-check of ``p13n bench load``: the same /v1/score bodies, from a tool nobody here wrote.

Each Locust user sends one request per ``1 / P13N_LOCUST_USER_RATE`` seconds
(``constant_throughput``), so U users offer U × rate requests/s. Unlike our generator, a Locust
user waits for its answer before the next one (closed loop per user) and Locust measures from the
actual send, not from the scheduled one: a stall lowers the offered rate instead of showing up as
queueing. Nor are its arrivals even: on 2026-11-29, 100 users × 1 req/s spawned at ``-r 100``
against a stub server that logged arrival times sent up to 53 requests within one 10 ms window, with
94 % of 10 ms windows empty — its users fire in clumps, so compare its percentiles with the burst
step of ``p13n bench load`` as much as with the uniform one. Run it headless (``benchmarks/RESULTS.md`` has the command)::

    P13N_LOCUST_BODIES=bodies.jsonl locust -f benchmarks/locustfile.py --headless \\
        -u 100 -r 100 -t 20s --host http://127.0.0.1:PORT --csv out/locust

``P13N_LOCUST_BODIES``: a JSONL file of /v1/score bodies (``p13n bench load --write-bodies FILE``);
``P13N_LOCUST_KEY``: the API key (the dev stack's demo key by default).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from locust import FastHttpUser, constant_throughput, task

_BODIES = [line for line in Path(os.environ["P13N_LOCUST_BODIES"]).read_text().splitlines() if line.strip()]
_NEXT = itertools.count()
_HEADERS = {"content-type": "application/json",
            "authorization": f"Bearer {os.environ.get('P13N_LOCUST_KEY', 'p13n-demo-key')}"}  # fmt: skip


class ScoreUser(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("P13N_LOCUST_USER_RATE", "1")))

    @task
    def score(self) -> None:
        body = _BODIES[next(_NEXT) % len(_BODIES)]
        self.client.post("/v1/score", data=body, headers=_HEADERS, name="/v1/score")
