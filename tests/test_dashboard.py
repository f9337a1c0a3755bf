"""The Grafana dashboard (``p13n/dashboard.py``): the committed JSON is the generated one, the dev overlay
provisions it, and the metric names its queries select are read with a PromQL parser (``promql-parser``).

Whether those names are exported by a live consumer and a live Serve app is checked in
``tests/serving/test_dashboard_metrics.py``, with :func:`metric_names` and :func:`exported_names` from here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from p13n.dashboard import DASHBOARD, UID, queries, render
from tests.conftest import REPO

#: Grafana's variables are not PromQL: each is replaced by a value of its kind before parsing.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (each vector selector's name, or its ``__name__="..."`` matcher).
    Raises ValueError for a selector without a fixed name (a regex on ``__name__``) or an unparsable query."""
    import promql_parser

    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            equal = promql_parser.MatchOp.Equal
            fixed = [m.value for m in node.matchers.matchers if m.name == "__name__" and m.op == equal]
            if node.name is None and not fixed:
                raise ValueError(f"a selector without a fixed metric name in {expr!r}")
            names.update([node.name] if node.name else fixed)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


#: The series names a family of each type exposes (the text format's suffixes).
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("_sum", "_count", "_created", ""), "gauge": ("",), "untyped": ("",)}  # fmt: skip


def exported_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition carries: the samples' names, and those its ``# TYPE``
    lines declare (a labelled family with no child yet has a TYPE line and no sample).

    >>> sorted(exported_names("# TYPE a counter\\n# TYPE h histogram\\nh_count 1\\ng{x=\\"1\\"} 2\\n"))
    ['a_created', 'a_total', 'g', 'h_bucket', 'h_count', 'h_created', 'h_sum']
    """
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names.update(base + suffix for suffix in SUFFIXES.get(kind, ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def test_the_committed_dashboard_is_the_generated_one():
    assert DASHBOARD.read_text() == render(), f"{DASHBOARD.relative_to(REPO)} is stale: run `make dashboard`"


def test_the_dashboard_covers_what_an_operator_looks_at():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == UID
    names = set().union(*(metric_names(q) for q in queries(dashboard)))
    assert names == {
        "ray_p13n_request_duration_seconds_count", "ray_p13n_request_duration_seconds_bucket",
        "ray_p13n_stage_duration_seconds_bucket", "ray_p13n_degraded_total", "ray_p13n_budget_miss_total",
        "ray_p13n_encoder_batch_size_bucket", "ray_p13n_encoder_batch_size_sum", "ray_p13n_encoder_batch_size_count",
        "ray_p13n_redis_errors_total", "p13n_consumer_retries_total", "p13n_consumer_lag",
        "p13n_consumer_freshness_seconds_bucket", "p13n_consumer_events_total", "p13n_consumer_dead_letters_total",
        "p13n_consumer_batch_size_bucket", "p13n_consumer_ready"}  # fmt: skip
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"} for p in panels)
    for panel in panels:  # every panel fits the 24-column grid
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_metric_names_are_read_from_the_syntax_tree():
    expr = ('histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{endpoint=~"x|y"}[$__rate_interval]))) '
            '/ on() group_left sum(b_total offset 5m) + {__name__="c"} + count(d)')  # fmt: skip
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d"}
    with pytest.raises(ValueError, match="fixed metric name"):
        metric_names('{__name__=~"p13n_.*"}')
    with pytest.raises(ValueError):
        metric_names("sum(rate(x[5m])")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")
def test_the_dev_overlay_provisions_the_dashboard():
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / "dev")], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    maps = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "ConfigMap"
            and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]  # fmt: skip
    assert len(maps) == 1 and maps[0]["metadata"]["namespace"] == "p13n-dev"
    assert json.loads(maps[0]["data"][DASHBOARD.name]) == json.loads(DASHBOARD.read_text())
