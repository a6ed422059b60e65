"""The alert rules and the Grafana dashboard in deploy/: valid, and about metrics the code has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from prometheus_client.metrics import MetricWrapperBase

from config.metrics import PlatformCollector
from core import metrics

DEPLOY = Path(settings.BASE_DIR) / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "signalfan.json"
METRIC_NAME = re.compile(r"\bsignalfan_[a-z0-9_]+")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
PROMTOOL = shutil.which("promtool")


def _defined_names() -> set[str]:
    """Every sample name the code exposes: core.metrics' and the scrape-time gauges."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            names |= {value._name + suffix for suffix in SUFFIXES[value._type]}
    names |= {family.name for family in PlatformCollector().collect()}
    return names


def _rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def _panel_exprs() -> dict[str, list[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_alert_rules_and_the_scrape_config(tmp_path):
    # given the rules, and the scrape config pointed at them and at a token file
    token = tmp_path / "metrics_token"
    token.write_text("a-token")
    config = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    config = config.replace("/etc/prometheus/alerts.yml", str(RULES))
    config = config.replace("/run/secrets/metrics_token", str(token))
    (tmp_path / "prometheus.yml").write_text(config)

    # when promtool checks them
    rules = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True)
    scrape = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True
    )

    # then both pass
    assert rules.returncode == 0, rules.stdout.decode() + rules.stderr.decode()
    assert scrape.returncode == 0, scrape.stdout.decode() + scrape.stderr.decode()


@pytest.mark.django_db
def test_alert_rules_cover_the_issue_and_name_only_metrics_the_code_defines():
    # given the metrics the code exposes
    defined = _defined_names()

    # when the rules' expressions are read
    exprs = _rule_exprs()

    # then every alert asked for is there, each about metrics that exist
    for alert in (
        "SignalfanMarketNotExecuted",
        "SignalfanCloseToStartSlow",
        "SignalfanExecutionsFailing",
        "SignalfanOrdersRejected",
        "SignalfanStreamerDown",
        "SignalfanQueueBackingUp",
    ):
        assert alert in exprs
    for alert, expr in exprs.items():
        used = set(METRIC_NAME.findall(expr))
        assert used or "up{" in expr, alert
        assert used <= defined, f"{alert} names unknown metrics {used - defined}"


@pytest.mark.django_db
def test_dashboard_loads_and_every_panel_queries_metrics_the_code_defines():
    # given the metrics the code exposes
    defined = _defined_names()

    # when the provisioned dashboard is loaded
    panels = _panel_exprs()

    # then it has panels, each querying only metrics that exist, and every metric is shown
    assert len(panels) >= 10
    shown: set[str] = set()
    for title, exprs in panels.items():
        used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
        assert used, f"panel {title!r} has no query"
        assert used <= defined, f"panel {title!r} names unknown metrics {used - defined}"
        shown |= used
    families = {re.sub(r"_(total|bucket|count|sum)$", "", name) for name in defined}
    assert families <= {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in shown}


def test_compose_runs_prometheus_and_grafana_on_the_files_in_deploy():
    # given the compose file
    compose = yaml.safe_load((Path(settings.BASE_DIR) / "docker-compose.yml").read_text())

    # when its monitoring services are read
    services = compose["services"]
    mounted = [
        volume.split(":")[0]
        for name in ("prometheus", "grafana")
        for volume in services[name]["volumes"]
        if volume.startswith("./")
    ]

    # then both exist, on files of the repository, and every app process shares the metrics
    assert len(mounted) == 4
    assert all((Path(settings.BASE_DIR) / path).exists() for path in mounted)
    for name in ("web", "worker", "backtest-worker", "notification-worker", "beat", "streamer"):
        assert "metrics:/metrics" in services[name]["volumes"], name
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/metrics"
