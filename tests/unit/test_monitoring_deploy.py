"""Alert rules and dashboard: promtool checks and rule unit tests, and only metrics sluice exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REQUIRE_SERVICES, ROOT
from tests.unit.test_monitoring_collector import fake_sources, scrape

ALERTS = ROOT / "deploy/prometheus/alerts.yml"
RULE_TESTS = ROOT / "tests/deploy/alerts_test.yml"
DASHBOARD = ROOT / "deploy/grafana/sluice-dashboard.json"
GUIDE_ALERTS = {"LowCacheHitRate", "HighQueryLatency"}
REQUIRED_ALERTS = GUIDE_ALERTS | {
    "QueueBacklogGrowing",
    "DeadLettersGrowing",
    "WorkersDown",
    "RateLimiterSaturated",
    "CDNPurgeFailures",
    "QueueOldestMessageTooOld",
    "AIBudgetNearlySpent",
}
PROMQL_WORDS = {
    "sum", "max", "min", "rate", "increase", "delta", "histogram_quantile", "by", "without", "and",
    "or", "le", "instance", "queue", "event", "table", "handler", "source", "printf", "model",
    "reason",
}  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        message = "promtool is not installed (apt-get install prometheus)"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=ROOT, check=False)


def test_promtool_checks_the_rules_and_the_config() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", str(ROOT / "deploy/prometheus/prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_alert_exists_and_is_tested_firing_and_not() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} == REQUIRED_ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for alert in REQUIRED_ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert} never fires in a test"
        assert any(not case["exp_alerts"] for case in mine), f"{alert} never stays silent"
    latency = next(r for r in rules if r["alert"] == "HighQueryLatency")["expr"]
    assert "histogram_quantile(0.95" in latency and "_bucket[5m]" in latency


def exported_names(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    from sluice.monitoring import queuewait, recorder

    fake_sources(monkeypatch)
    # The embedded broker keeps no waiting set; a distributed one reports every queue.
    monkeypatch.setattr(queuewait, "oldest_waiting", lambda: {("low", "low"): 1.0})
    recorder.observe("db_query", 0.1, {"operation": "select", "table": "t"})
    recorder.observe("task", 0.1, {"queue": "high", "handler": "h", "outcome": "success"})
    for event in ("slow_query", "cdn_purge_run", "cdn_purge_failure", "cdn_paths_purged"):
        recorder.count(
            event, {"operation": "select", "table": "t"} if event == "slow_query" else {}
        )
    recorder.flush()
    return {name for name, _ in scrape()} | {
        "cdn_cache_hit_ratio",
        "sluice_cdn_edge_requests_total",
    }


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"|\[[^\]]*\]', "", expr)
    words = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", without_strings))
    return {w for w in words if w not in PROMQL_WORDS and not w.isupper()}


def test_rules_and_dashboard_use_only_exported_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    exported = exported_names(monkeypatch)
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    used = {name for rule in rules for name in metric_names(rule["expr"])}
    dashboard = json.loads(DASHBOARD.read_text())
    used |= {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in metric_names(target["expr"])
    }
    assert used - exported == set()
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    for guide_name in ("ai_cache_hit_rate", "async_queue_size", "db_query_latency_bucket"):
        assert guide_name in used
