"""A real Prometheus (the pinned 2.42.0) with the shipped config and alert rules, pointed at a
running `krl allocator`, reads the allocator's metrics back through its query API."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
import yaml

from krl.common.procs import allocator_process, free_port
from krl_client import AllocatorClient
from tests.deploy.conftest import ROOT, tool

pytestmark = pytest.mark.integration


def _query(base: str, q: str) -> list[dict]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    body = json.load(urllib.request.urlopen(url, timeout=5))
    assert body["status"] == "success", body
    return body["data"]["result"]


def test_prometheus_scrapes_the_allocator_with_the_shipped_config(tmp_path):
    pport = free_port()
    alloc = allocator_process(tmp_path).start(60)
    prom = None
    try:
        with AllocatorClient(alloc.target, namespace="prom") as c:
            a = c.allocate(["a", "b", "c"], 12, min_n=2, max_n=8)
            c.report(a.allocation_id, {"a": (1, a.n["a"]), "b": (0, a.n["b"])})

        cfg = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
        cfg["global"]["scrape_interval"] = "1s"
        cfg["global"]["evaluation_interval"] = "1s"
        cfg["rule_files"] = [str(ROOT / "deploy/prometheus" / f) for f in cfg["rule_files"]]
        jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
        assert set(jobs) == {"krl-allocator", "krl-rollout", "krl-trainer"}
        jobs["krl-allocator"]["static_configs"] = [
            {"targets": [alloc.http.removeprefix("http://")]}
        ]
        conf = tmp_path / "prometheus.yml"
        conf.write_text(yaml.safe_dump(cfg))
        log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115
        prom = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={conf}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{pport}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{pport}"
        deadline, got = time.monotonic() + 60, []
        while time.monotonic() < deadline and not got:
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(OSError):  # not listening yet
                got = _query(base, 'krl_allocator_allocations_total{job="krl-allocator"}')
            time.sleep(0.5)
        assert got, "Prometheus never returned the allocator's metric"
        assert got[0]["metric"]["mode"] == "eb" and float(got[0]["value"][1]) == 1.0
        accepted = _query(base, 'krl_allocator_report_outcomes_total{result="accepted"}')
        assert float(accepted[0]["value"][1]) == 2.0
        assert float(_query(base, 'up{job="krl-allocator"}')[0]["value"][1]) == 1.0
        # the shipped alert rules are loaded and evaluated
        rules = json.load(urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5))
        names = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert names == {
            "KrlAllocatorDown",
            "KrlAllocateLatencyHigh",
            "KrlEffectiveRolloutRatioCollapsing",
            "KrlReportsRejected",
        }
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(timeout=30)
        alloc.stop()
