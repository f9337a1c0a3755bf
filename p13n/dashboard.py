"""The Grafana dashboard of p13n, built with the ``grafana-foundation-sdk`` (``python -m p13n.dashboard``).

It writes ``k8s/components/grafana-dashboard/p13n-dashboard.json``; the kustomize component beside it
turns the file into a ConfigMap labelled ``grafana_dashboard: "1"`` (the label Grafana's dashboard sidecar
provisions from, as kube-prometheus-stack sets it up) and the dev overlay includes the component. A test
regenerates the JSON and compares it with the committed file, and checks every query's metric names
against what a live consumer and a live Serve app export.

What it shows, with the metric behind each panel (Serve metrics carry Ray's ``ray_`` prefix,
``serving/metrics.py``; consumer metrics are ``stream/metrics.py``'s):

* Serve: request rate by endpoint and status, p50/p99 latency per endpoint and per stage, degraded answers
  by reason, budget misses, encoder batch sizes, Redis errors (Serve's failed reads and the consumer's
  Redis retries);
* consumer: lag per topic, event-to-state freshness (p50/p99), applied / duplicate / dead-letter rates and
  dead letters by reason, batch sizes, readiness.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["DASHBOARD", "UID", "build", "main", "queries", "render"]

DASHBOARD = Path(__file__).resolve().parent.parent / "k8s" / "components" / "grafana-dashboard" / "p13n-dashboard.json"
UID = "p13n-overview"
RATE = "$__rate_interval"
DS = "${datasource}"


def _query(expr: str, legend: str, ref: str):
    from grafana_foundation_sdk.builders.prometheus import Dataquery

    return Dataquery().expr(expr).legend_format(legend).ref_id(ref)


def _timeseries(title: str, description: str, unit: str, targets: list[tuple[str, str]], width: int = 12):
    """A time-series panel of ``targets`` ((PromQL, legend) pairs) on the dashboard's Prometheus data source."""
    from grafana_foundation_sdk.builders.timeseries import Panel
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    panel = (Panel().title(title).description(description).unit(unit).span(width).height(8)
             .datasource(DataSourceRef(type_val="prometheus", uid=DS)))  # fmt: skip
    for n, (expr, legend) in enumerate(targets):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + n)))
    return panel


def _quantiles(metric: str, by: str, legend: str, where: str = "") -> list[tuple[str, str]]:
    """p50 and p99 of a histogram ``metric`` (its ``_bucket`` series) per ``by`` labels."""
    selector = f"{metric}_bucket{{{where}}}" if where else f"{metric}_bucket"
    return [(f"histogram_quantile({q}, sum by (le, {by}) (rate({selector}[{RATE}])))", f"p{int(q * 100)} {legend}")
            for q in (0.5, 0.99)]  # fmt: skip


def _serve_panels() -> list:
    """The Serve row: requests, latency per endpoint and stage, degraded answers, budget misses, encoder
    batches, Redis errors."""
    endpoints = 'endpoint=~"score|rewrite|chat|events|users"'
    return [
        _timeseries("Requests by endpoint and status", "Answers per second, errors included "
                    "(ray_p13n_request_duration_seconds_count).", "reqps",
                    [(f"sum by (endpoint, status) (rate(ray_p13n_request_duration_seconds_count[{RATE}]))",
                      "{{endpoint}} {{status}}")]),
        _timeseries("Latency per endpoint (p50, p99)", "From the first byte read to the response handed back.", "s",
                    _quantiles("ray_p13n_request_duration_seconds", "endpoint", "{{endpoint}}", endpoints)),
        _timeseries("Latency per stage (p50, p99)", "One answer in ten is sampled per stage (serving/metrics.py).",
                    "s", _quantiles("ray_p13n_stage_duration_seconds", "endpoint, stage", "{{endpoint}} {{stage}}"),
                    width=24),
        _timeseries("Degraded answers by reason", "Answers that skipped a stage, per second, by reason (the "
                    "`degraded` list of each answer).", "ops",
                    [(f"sum by (endpoint, reason) (rate(ray_p13n_degraded_total[{RATE}]))",
                      "{{endpoint}} {{reason}}")]),
        _timeseries("Budget misses", "Answers later than their budget_ms, per second.", "ops",
                    [(f"sum by (endpoint) (rate(ray_p13n_budget_miss_total[{RATE}]))", "{{endpoint}}")]),
        _timeseries("Encoder batch sizes", "Texts per query-encoder batch: p50, p99 and the mean.", "short",
                    [*_quantiles("ray_p13n_encoder_batch_size", "deployment", "batch"),
                     (f"sum(rate(ray_p13n_encoder_batch_size_sum[{RATE}])) "
                      f"/ sum(rate(ray_p13n_encoder_batch_size_count[{RATE}]))", "mean batch")]),
        _timeseries("Redis errors", "Serve requests whose Redis reads failed, and consumer batches retried because "
                    "Redis failed, per second.", "ops",
                    [(f"sum by (endpoint) (rate(ray_p13n_redis_errors_total[{RATE}]))", "serve {{endpoint}}"),
                     (f'sum(rate(p13n_consumer_retries_total{{dependency="redis"}}[{RATE}]))', "consumer retries")]),
    ]  # fmt: skip


def _consumer_panels() -> list:
    """The consumer row after its readiness stat: lag, freshness, outcomes, dead letters, batch sizes."""
    return [
        _timeseries("Consumer lag", "Records behind the end of each partition, summed per topic.", "short",
                    [("sum by (topic) (p13n_consumer_lag)", "{{topic}}")], width=10),
        _timeseries("Freshness (p50, p99)", "Event time to state write, when the event was applied.", "s",
                    _quantiles("p13n_consumer_freshness_seconds", "job", "freshness"), width=10),
        _timeseries("Events: applied, duplicate, dead-letter", "Per second, by outcome.", "ops",
                    [(f"sum by (outcome) (rate(p13n_consumer_events_total[{RATE}]))", "{{outcome}}")]),
        _timeseries("Dead letters by reason", "Records sent to the dead-letter topic, per second.", "ops",
                    [(f"sum by (topic, reason) (rate(p13n_consumer_dead_letters_total[{RATE}]))",
                      "{{topic}} {{reason}}")]),
        _timeseries("Consumer batch sizes (p50, p99)", "Records per processed batch.", "short",
                    _quantiles("p13n_consumer_batch_size", "job", "batch")),
    ]  # fmt: skip


def _ready_stat():
    """How many consumers are ready, of all members."""
    from grafana_foundation_sdk.builders.stat import Panel as Stat
    from grafana_foundation_sdk.models.dashboard import DataSourceRef

    return (Stat().title("Consumers ready").description("Members whose Redis and Kafka answer, of all.")
             .span(4).height(8).datasource(DataSourceRef(type_val="prometheus", uid=DS))
             .with_target(_query("sum(p13n_consumer_ready)", "ready", "A"))
             .with_target(_query("count(p13n_consumer_ready)", "members", "B")))  # fmt: skip


def build():
    """The dashboard builder (call ``.build()`` for the model)."""
    from grafana_foundation_sdk.builders.dashboard import Dashboard, DatasourceVariable, Row
    from grafana_foundation_sdk.models.dashboard import DashboardCursorSync

    dashboard = (
        Dashboard("p13n").uid(UID).tags(["p13n"])
        .description("Streaming personalization: the Serve app and the consumers")
        .refresh("30s").time("now-3h", "now").timezone("utc").tooltip(DashboardCursorSync.CROSSHAIR).readonly()
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_row(Row("Serve (/v1/score, /v1/rewrite, /v1/chat/completions, /v1/events)"))
    )  # fmt: skip
    for panel in _serve_panels():
        dashboard = dashboard.with_panel(panel)
    dashboard = dashboard.with_row(Row("Consumer (Kafka → Redis)")).with_panel(_ready_stat())
    for panel in _consumer_panels():
        dashboard = dashboard.with_panel(panel)
    return dashboard


def render() -> str:
    """The dashboard's JSON, as committed (sorted keys, two-space indent, final newline)."""
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


def queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of a dashboard's JSON (panels in rows or at the top level)."""
    panels = [*dashboard.get("panels", [])]
    panels += [p for row in dashboard.get("panels", []) for p in row.get("panels", [])]
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


def main() -> int:
    DASHBOARD.parent.mkdir(parents=True, exist_ok=True)
    wanted = render()
    if not DASHBOARD.exists() or DASHBOARD.read_text() != wanted:
        DASHBOARD.write_text(wanted)
        print(f"wrote {DASHBOARD} ({len(queries(json.loads(wanted)))} queries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
