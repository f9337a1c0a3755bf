"""Every alert of ``k8s/base/alerts.yaml`` under ``promtool test rules``, with the cases of
``tests/k8s_rules/alerts_test.yaml``: input series and the alerts expected of them, including the
consumer or Serve gone (only the absence rules can see that: the others use series those processes
export) and both healthy (nothing fires).

promtool comes with Debian's ``prometheus`` package; without it these tests fail, they do not skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

ALERTS = REPO / "k8s" / "base" / "alerts.yaml"
MONITORING = REPO / "k8s" / "base" / "monitoring.yaml"
CASES = Path(__file__).parent / "k8s_rules" / "alerts_test.yaml"
RULES_FILE = "alerts.rules.yaml"  # the name alerts_test.yaml's rule_files expects


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed; it comes with Debian's `prometheus` package "
                    "(apt-get install -y prometheus)", pytrace=False)  # fmt: skip
    return path


def rule_groups() -> list[dict]:
    """The groups of the PrometheusRule in k8s/base/alerts.yaml, as a Prometheus rules file has them."""
    doc = yaml.safe_load(ALERTS.read_text())
    assert doc["kind"] == "PrometheusRule"
    return doc["spec"]["groups"]


def alert_names() -> set[str]:
    return {rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule}


@pytest.fixture
def rules_dir(tmp_path) -> Path:
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump({"groups": rule_groups()}, sort_keys=False))
    shutil.copy(CASES, tmp_path / CASES.name)
    return tmp_path


def run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_rules_are_valid_prometheus_rules(promtool, rules_dir):
    result = run(promtool, "check", "rules", RULES_FILE, cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_every_alert_passes_its_promtool_cases(promtool, rules_dir):
    result = run(promtool, "test", "rules", CASES.name, cwd=rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_fires_in_a_case_and_stays_silent_when_all_is_healthy():
    tests = yaml.safe_load(CASES.read_text())["tests"]
    checks = [(case["name"], check) for case in tests for check in case["alert_rule_test"]]
    fires = {check["alertname"] for _, check in checks if check.get("exp_alerts")}
    healthy = tests[0]
    assert healthy["name"].startswith("consumer and Serve healthy")
    silent = {check["alertname"] for check in healthy["alert_rule_test"] if check.get("exp_alerts") == []}
    assert fires == alert_names()
    assert silent == alert_names()


def test_absence_rules_watch_the_jobs_the_monitors_scrape():
    """The ``job`` of each monitor's series (its jobLabel's value on the objects it selects) is watched
    by an ``absent(up{job=...} == 1)`` rule, and no rule names a job nothing scrapes."""
    jobs = set()
    for monitor in yaml.safe_load_all(MONITORING.read_text()):
        spec = monitor["spec"]
        assert spec.get("jobLabel") in spec["selector"]["matchLabels"], monitor["metadata"]["name"]
        jobs.add(spec["selector"]["matchLabels"][spec["jobLabel"]])
    exprs = [rule["expr"] for group in rule_groups() for rule in group["rules"]]
    absent = {m for e in exprs for m in re.findall(r'absent\(up\{job="([^"]+)"\} == 1\)', e)}
    named = {m for e in exprs for m in re.findall(r'\bup\{job="([^"]+)"\}', e)}
    assert jobs == {"p13n-consumer", "p13n-serve"}
    assert absent == jobs
    assert named == jobs
