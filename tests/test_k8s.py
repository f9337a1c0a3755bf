"""k8s/: both overlays render with kustomize, every document is valid (strictly) against its schema,
and the pieces agree with each other and with p13n's configuration."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from p13n.config import Config
from p13n.k8s import RAYSERVICE, embed
from serving.runner import SERVE_CONFIG
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed")

SCHEMAS = Path(__file__).parent / "k8s_schemas"
CRD_SCHEMAS = {
    ("ray.io/v1", "RayService"): "rayservice_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject_v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring-servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring-podmonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring-prometheusrule_v1.json",
    ("kafka.strimzi.io/v1beta2", "Kafka"): "kafka-kafka_v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"): "kafka-kafkanodepool_v1beta2.json",
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): "kafka-kafkatopic_v1beta2.json",
}
OVERLAYS = ("dev", "prod")


def render(overlay: str) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    return request.param, render(request.param)


def strict(schema):
    """Unknown fields become errors (as `kubeconform -strict`), except where the CRD preserves them."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def validate_crd(doc: dict, schema: dict) -> None:
    """Validate without checking the schema itself: some CRD patterns are Go regexes (e.g. ``^(?i)…``)
    that Python's ``re`` rejects as a whole schema, though no field we use is checked against them."""
    import jsonschema

    jsonschema.validators.validator_for(schema)(schema).validate(doc)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name, [d["metadata"]["name"] for d in by_kind(docs, kind)])
    return found[0]


def test_every_document_is_valid_against_its_schema(rendered):
    import kubernetes_validate

    overlay, docs = rendered
    kinds = set()
    for doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        kinds.add(doc["kind"])
        if key in CRD_SCHEMAS:
            validate_crd(doc, strict(json.loads((SCHEMAS / CRD_SCHEMAS[key]).read_text())))
        else:
            kubernetes_validate.validate(doc, desired_version="1.32", strict=True)
    assert {"Deployment", "RayService", "ScaledObject", "ConfigMap", "ServiceMonitor", "PodMonitor", "PrometheusRule",
            "PodDisruptionBudget", "NetworkPolicy"} <= kinds, overlay  # fmt: skip
    if overlay == "dev":
        assert {"Kafka", "KafkaNodePool", "KafkaTopic", "Secret"} <= kinds


def test_a_schema_violation_is_caught():
    """The strict validation above can fail: an unknown field in a RayService is an error."""
    import jsonschema

    service = copy.deepcopy(one(render("dev"), "RayService"))
    service["spec"]["serveConfigV3"] = "typo"
    with pytest.raises(jsonschema.ValidationError, match="serveConfigV3"):
        validate_crd(service, strict(json.loads((SCHEMAS / CRD_SCHEMAS[("ray.io/v1", "RayService")]).read_text())))


def test_the_rayservice_runs_serving_serve_config_yaml():
    assert embed(RAYSERVICE.read_text(), SERVE_CONFIG.read_text()) == RAYSERVICE.read_text(), (
        "k8s/base/rayservice.yaml is stale: run `make k8s`")
    for overlay in OVERLAYS:
        service = one(render(overlay), "RayService")
        assert yaml.safe_load(service["spec"]["serveConfigV2"]) == yaml.safe_load(SERVE_CONFIG.read_text())


def test_configuration_is_valid_p13n_configuration_and_consistent(rendered):
    overlay, docs = rendered
    (settings,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("p13n-config-")]
    env = dict(settings["data"])
    if overlay == "dev":  # prod's Secret comes from the secret manager
        import base64

        secret = one(docs, "Secret")
        env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    env.pop("HF_HUB_OFFLINE")
    config = Config.from_sources(env=env)  # unknown or malformed P13N_ variables raise
    scaled = one(docs, "ScaledObject")
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert (trigger["bootstrapServers"], trigger["topic"], trigger["consumerGroup"]) == (
        config.kafka.bootstrap, config.kafka.events_topic, config.kafka.group_id)
    consumer = one(docs, "Deployment", "p13n-consumer")
    container = consumer["spec"]["template"]["spec"]["containers"][0]
    assert [p["containerPort"] for p in container["ports"]] == [config.consumer.metrics_port]
    assert {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]} == {"/readyz", "/healthz"}
    assert consumer["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > config.consumer.shutdown_grace_s
    if overlay == "dev":
        topics = {t["spec"]["topicName"]: t for t in by_kind(docs, "KafkaTopic")}
        assert {config.kafka.events_topic, config.kafka.items_topic, config.kafka.dlq_topic} <= topics.keys()
        assert topics[config.kafka.events_topic]["spec"]["partitions"] >= scaled["spec"]["maxReplicaCount"]
        assert one(docs, "Service", "redis")["spec"]["ports"][0]["port"] == 6379 and "redis:6379" in config.redis.url


def pod_templates(docs: list[dict]) -> list[tuple[str, dict, dict]]:
    """(namespace, labels, pod spec) of every pod the manifests would create."""
    out = []
    for doc in docs:
        ns = doc["metadata"].get("namespace")
        if doc["kind"] == "Deployment":
            template = doc["spec"]["template"]
            out.append((ns, template["metadata"]["labels"], template["spec"]))
        if doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
                out.append((ns, group["template"]["metadata"]["labels"], group["template"]["spec"]))
    return out


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", selector).items())


def test_every_selector_selects_pods_and_every_port_exists(rendered):
    overlay, docs = rendered
    pods = pod_templates(docs)
    selectors = [(d["kind"], d["metadata"]["name"], d["spec"]["selector"]) for d in docs
                 if d["kind"] in ("Service", "PodDisruptionBudget", "ServiceMonitor", "PodMonitor")]  # fmt: skip
    selectors += [(d["kind"], d["metadata"]["name"], d["spec"]["podSelector"]) for d in by_kind(docs, "NetworkPolicy")]
    for kind, name, selector in selectors:
        assert any(selects(selector, labels) for _, labels, _ in pods), f"{overlay}: {kind} {name} selects no pod"
    for monitor in by_kind(docs, "PodMonitor"):
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            for _, labels, spec in pods:
                if selects(monitor["spec"]["selector"], labels):
                    assert endpoint["port"] in {p.get("name") for c in spec["containers"] for p in c.get("ports", [])}
    deployments = {d["metadata"]["name"] for d in by_kind(docs, "Deployment")}
    assert one(docs, "ScaledObject")["spec"]["scaleTargetRef"]["name"] in deployments
    for _, labels, spec in pods:
        for container in spec["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"], labels
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, labels
