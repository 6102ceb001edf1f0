"""The rollout service's processes: replicas, SIGTERM and SIGKILL, each test with its own
`krl rollout` process."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from krl.clients.rollout import PromptSpec, RolloutClient
from tests.rollout_fixtures import start_rollout, tiny_model

pytestmark = pytest.mark.integration
__all__ = ["tiny_model"]  # fixtures


def prompts(k: int, n: list[int]) -> list[PromptSpec]:
    return [PromptSpec(f"p{i}", n[i], f"{i}+{i}=", str(2 * i)) for i in range(k)]


def test_two_replicas_split_large_groups_and_keep_n_exact(tmp_path: Path, tiny_model: Path) -> None:
    svc = start_rollout(tmp_path, "--model", str(tiny_model), "--replicas", "2")
    try:
        ns = [40, 1, 3, 0, 7]
        with RolloutClient(svc.target) as c:
            assert c.info().replicas == 2
            groups = {g.index: g for g in c.generate(prompts(5, ns), max_new_tokens=4, seed=2)}
        assert {i: len(g.completions) for i, g in groups.items()} == dict(enumerate(ns))
        assert all(math.isfinite(lp) for x in groups[0].completions for lp in x.logprobs)
    finally:
        assert svc.proc.stop() == 0


def test_sigterm_stops_the_service_and_its_replicas(tmp_path: Path, tiny_model: Path) -> None:
    svc = start_rollout(tmp_path, "--model", str(tiny_model))
    pids = svc.info()["replica_pids"]
    assert svc.proc.stop() == 0
    time.sleep(0.5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_a_killed_service_leaves_no_worker_processes(tmp_path: Path, tiny_model: Path) -> None:
    """SIGKILL of the service: its scoring workers (which hold both ends of their task queue,
    so they never see it close) and engine replicas must not outlive it."""
    svc = start_rollout(tmp_path, "--model", str(tiny_model))
    pid = svc.proc.proc.pid
    children = _children(pid)
    assert len(children) >= 2, children  # an engine replica and a scoring worker at least
    svc.proc.proc.kill()
    svc.proc.proc.wait(10)
    deadline = time.monotonic() + 10
    while alive := [c for c in children if Path(f"/proc/{c}").exists()]:
        assert time.monotonic() < deadline, f"outlived the service: {alive}"
        time.sleep(0.1)
