"""The dashboard, the alert rules, compose and Prometheus agree with the services: every metric
they use exists in a service's registry, and every scrape target is a compose service's port."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from krl.allocator.metrics import AllocatorMetrics
from krl.rollout.metrics import RolloutMetrics
from krl.trainer.metrics import TrainerMetrics
from tests.deploy.conftest import ROOT, tool

pytestmark = pytest.mark.integration
DASHBOARD = ROOT / "deploy/grafana/dashboards/knapsack-rl.json"


def _known_metrics() -> set[str]:
    """Series names each service can export (labelled metrics have no samples until used)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for m in (AllocatorMetrics(), RolloutMetrics(), TrainerMetrics()):
        for fam in m.registry.collect():
            names.update(fam.name + sfx for sfx in suffixes.get(fam.type, ("",)))
    return names


def _used(text: str) -> set[str]:
    return set(re.findall(r"\bkrl_[a-z_]+\b", text))


def test_the_dashboard_is_generated_from_its_script():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/make_dashboard.py"), "--print"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == DASHBOARD.read_text(), "run python scripts/make_dashboard.py"


def test_dashboard_and_alerts_use_only_metrics_the_services_export():
    known = _known_metrics()
    dash = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    for where, text in (("dashboard", exprs), ("alerts.yml", alerts)):
        unknown = _used(text) - known
        assert not unknown, f"{where} uses metrics no service exports: {sorted(unknown)}"
    titles = {p["title"] for p in dash["panels"]}
    for want in (
        "Rollouts per prompt (n)",
        "Effective-rollout ratio",
        "Allocate and solve latency",
        "Prompts solved / unsolved",
    ):
        assert want in titles


def test_compose_and_prometheus_agree_on_services_and_ports():
    res = subprocess.run(
        [
            tool("docker-compose"),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    compose = json.loads(res.stdout)["services"]
    assert {"redis", "allocator", "rollout", "trainer", "prometheus", "grafana"} <= set(compose)
    assert "rollout-gpu" not in compose  # behind the gpu profile
    assert "--appendonly" in compose["redis"]["command"]
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    ports = {"allocator": 8000, "rollout": 8001, "trainer": 8002}
    for job in prom["scrape_configs"]:
        (target,) = job["static_configs"][0]["targets"]
        host, port = target.split(":")
        assert host in compose and ports[host] == int(port)
    # published ports stay on the host's loopback
    for svc in compose.values():
        for p in svc.get("ports", []):
            assert p["host_ip"] == "127.0.0.1"
    env = compose["trainer"]["environment"]
    assert env["KRL_TRAINER_ALLOCATOR"] == "allocator:50051"
    gpu = json.loads(
        subprocess.run(
            [
                tool("docker-compose"),
                "-f",
                str(ROOT / "docker-compose.yml"),
                "--profile",
                "gpu",
                "config",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    dev = gpu["services"]["rollout-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["capabilities"] == ["gpu"] and dev["driver"] == "nvidia"
