"""Two real `krl rollout` processes behind one target (the trainer's view of a Helm release
with rollout.replicas = 2, through its headless Service): both serve, weights reach both."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from krl.clients.fleet import RolloutFleet, resolve, split
from krl.clients.rollout import PromptSpec
from krl.model.loading import load_model
from krl.model.weights import to_bytes
from tests.rollout_fixtures import build_model, start_rollout, tiny_model

pytestmark = pytest.mark.integration
__all__ = ["tiny_model"]


def _groups_served(svc) -> float:
    for fam in text_string_to_metric_families(svc.metrics()):
        for s in fam.samples:
            if s.name == "krl_rollout_groups_total":
                return s.value
    raise AssertionError("no krl_rollout_groups_total")


def test_two_rollout_processes_behind_one_target_both_serve(
    tmp_path: Path, tiny_model: Path
) -> None:
    a = start_rollout(tmp_path, "--model", str(tiny_model))
    b = start_rollout(tmp_path, "--model", str(tiny_model))
    try:
        ns = [5, 1, 3, 8, 2, 2, 7, 4, 0, 6]
        specs = [PromptSpec(f"p{i}", n, f"{i}+1=", str(i + 1)) for i, n in enumerate(ns)]
        with RolloutFleet(f"{a.target},{b.target}", retries=2) as fleet:
            assert len(fleet.members) == 2 and fleet.info().replicas == 2
            groups = list(fleet.generate(specs, max_new_tokens=4, seed=1))
            assert sorted(g.index for g in groups) == list(range(len(ns)))
            assert all(g.prompt_id == specs[g.index].prompt_id for g in groups)
            assert all(len(g.completions) == ns[g.index] for g in groups)
            served = (_groups_served(a), _groups_served(b))
            assert min(served) >= 3 and sum(served) == len(ns), served

            new = to_bytes(load_model(build_model(tmp_path / "new", seed=5)))
            fleet.push_weights(1, payload=new)
            assert a.info()["policy_version"] == b.info()["policy_version"] == 1
            again = list(fleet.generate(specs, max_new_tokens=4, min_policy_version=1))
            assert {g.policy_version for g in again} == {1} and len(again) == len(ns)
    finally:
        assert a.proc.stop() == 0 and b.proc.stop() == 0


def test_targets_resolve_to_members_and_splits_balance_rollouts() -> None:
    assert resolve("b:2, a:1,b:2") == ["a:1", "b:2"]
    assert "127.0.0.1:50052" in resolve("dns:///localhost:50052")
    with pytest.raises(ValueError, match="dns:///name:port"):
        resolve("dns:///localhost")
    specs = [PromptSpec(f"p{i}", n) for i, n in enumerate([64, 2, 2, 30, 30, 4, 0])]
    parts = split(specs, 2)
    assert sorted(i for p in parts for i in p) == list(range(7))
    loads = [sum(max(specs[i].n, 1) for i in p) for p in parts]
    assert abs(loads[0] - loads[1]) <= 64
