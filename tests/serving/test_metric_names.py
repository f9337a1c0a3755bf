"""p13n's metric names pass ``promtool check metrics`` (Prometheus' own linter: base units such as seconds,
counters ending in ``_total``, …). ``make setup`` installs promtool (Debian package ``prometheus``).

The consumer's registry is checked here as it renders; the Serve replicas' metrics are checked on a live
scrape in ``test_api.py``.
"""

from __future__ import annotations

import shutil
import subprocess

from stream.metrics import ConsumerMetrics


def promtool_problems(text: str, prefix: str = "p13n_") -> list[str]:
    """The lines of ``promtool check metrics`` about metric names containing ``prefix`` (other exporters' names,
    e.g. Ray's own, are not p13n's to fix)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make setup` installs it (Debian package prometheus)"
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    lines = (done.stdout + done.stderr).decode().splitlines()
    assert done.returncode in (0, 3), lines  # 3: lint problems found (listed); anything else: promtool failed
    return [line for line in lines if prefix in line]


def test_promtool_flags_what_it_should():
    assert promtool_problems("# HELP p13n_x_ms x\n# TYPE p13n_x_ms counter\np13n_x_ms 1\n"), "the check can fail"


def test_consumer_metric_names_pass_promtool():
    metrics = ConsumerMetrics()
    metrics.events.labels("applied").inc()
    metrics.dead_letters.labels("p13n.events", "invalid_json").inc()
    metrics.retries.labels("redis").inc()
    metrics.stage_seconds.labels("fold").observe(0.01)
    metrics.freshness.observe(1.0)
    metrics.batch_size.observe(10)
    metrics.lag.labels("p13n.events", "0").set(3)
    metrics.ready.set(1)
    text = metrics.render().decode()
    assert "p13n_consumer_events_total" in text
    assert promtool_problems(text) == []
