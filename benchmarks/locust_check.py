"""Run Locust headless against /v1/score with the bodies ``p13n bench load`` sends; read its CSV.

The ``locust`` step of ``p13n bench load`` (``pip install -e '.[bench]'``): ``users`` Locust users
at ``rate / users`` requests/s each (``constant_throughput``, see ``benchmarks/locustfile.py``),
spawned within one second, for ``seconds``. Locust measures from the actual send and each user waits
for its answer, so its percentiles leave out the queueing our open-loop generator counts.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["run_locust"]

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"


def run_locust(url: str, key: str, bodies: list[dict], *, rate: float, users: int, seconds: float) -> dict:
    """Locust's summary of /v1/score: requests, failures, achieved rate, latency percentiles (ms).

    Raises RuntimeError when Locust is not installed or exits without its CSV.
    """
    binary = shutil.which("locust") or str(Path(sys.executable).with_name("locust"))
    if not Path(binary).exists():
        raise RuntimeError("the locust step needs Locust: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory(prefix="p13n-locust-") as tmp:
        body_file = Path(tmp) / "bodies.jsonl"
        body_file.write_text("".join(json.dumps(b) + "\n" for b in bodies))
        env = {**os.environ, "P13N_LOCUST_BODIES": str(body_file), "P13N_LOCUST_KEY": key,
               "P13N_LOCUST_USER_RATE": repr(rate / users)}  # fmt: skip
        command = [binary, "-f", str(LOCUSTFILE), "--headless", "-u", str(users), "-r", str(users), "-t",
                   f"{int(seconds)}s", "--host", url, "--csv", str(Path(tmp) / "locust"), "--only-summary",
                   "--loglevel", "WARNING"]  # fmt: skip
        before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 60)
        after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - started
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        stats = Path(tmp) / "locust_stats.csv"
        if not stats.exists():
            raise RuntimeError(f"locust exited {done.returncode} without its CSV: {done.stderr[-500:]}")
        rows = {row["Name"]: row for row in csv.DictReader(stats.open())}
    row = rows["/v1/score"]
    return {
        "tool": "locust", "users": users, "rate": rate, "seconds": seconds,
        "command": " ".join(["locust -f benchmarks/locustfile.py", *command[3:9], f"{int(seconds)}s", "--host", "URL"]),
        "requests": int(row["Request Count"]), "failures": int(row["Failure Count"]),
        "achieved_rate": round(float(row["Requests/s"]), 1),
        "locust_cpu_share": round(cpu / wall, 3),  # of one core, start-up included
        "latency_ms": {"p50": float(row["50%"]), "p90": float(row["90%"]), "p99": float(row["99%"]),
                       "p99.9": float(row["99.9%"]), "max": round(float(row["Max Response Time"]), 3)},
    }  # fmt: skip
