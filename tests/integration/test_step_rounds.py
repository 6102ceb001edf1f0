"""The step's rounds (krl.rl.step) against the real allocator in process (an embedded
redis-server): what each strategy allocates, generates, reports and trains on, with scripted
rollouts whose rewards are known."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest

from krl.rl.data import EpochSampler
from krl.rl.step import StepRounds
from krl.sim.backends import InProcessAllocator
from krl_client.messages import Outcome
from krl_client.session import Journal


@dataclass(frozen=True)
class Scripted:
    prompt_id: str
    rewards: tuple[float, ...]


class ScriptedRollouts:
    """Prompts p0, p1, ...: an even one always succeeds, an odd one alternates 1, 0, 1, ...
    (informative from 2 rollouts); records every generate call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, int]] = []

    def generate(self, ids: list[str], n: Mapping[str, int], seed: int) -> dict[str, Scripted]:
        self.calls.append({pid: n[pid] for pid in ids})
        out = {}
        for pid in ids:
            odd = int(pid[1:]) % 2
            rewards = tuple(float(not odd or j % 2 == 0) for j in range(n[pid]))
            if rewards:
                out[pid] = Scripted(pid, rewards)
        return out

    def outcome(self, group: Scripted) -> Outcome:
        return Outcome(group.prompt_id, int(sum(group.rewards)), len(group.rewards), 0)

    def informative(self, group: Scripted) -> bool:
        return len(set(group.rewards)) > 1

    def merge(self, probe: Scripted, topup: Scripted) -> Scripted:
        return Scripted(probe.prompt_id, probe.rewards + topup.rewards)


@pytest.fixture(scope="module")
def allocator():
    a = InProcessAllocator()
    yield a
    a.close()


def _rounds(allocator, strategy: str, ns: str, **kw) -> tuple[StepRounds, ScriptedRollouts]:
    rollouts = ScriptedRollouts()
    sampler = EpochSampler([f"p{i}" for i in range(16)], 4, seed=1)
    return (
        StepRounds(allocator.client(ns), rollouts, sampler, strategy, 32, 2, 16, **kw),
        rollouts,
    )


def test_an_allocated_step_is_one_round_reported_whole(allocator):
    rounds, rollouts = _rounds(allocator, "knapsack-eb", "one-round")
    done, trained = rounds.step()
    (r,) = done
    assert len(rollouts.calls) == 1 and sum(r.plan.n.values()) == 32
    assert r.accepted == 4 and r.duplicates == 0
    assert [o.trials for o in r.outcomes.values()] == [r.plan.n[pid] for pid in r.ids]
    assert trained == r.groups and rounds.batches == 1 and rounds.rollouts_total == 32


def test_probe_then_topup_makes_one_group_per_prompt(allocator):
    rounds, rollouts = _rounds(allocator, "knapsack-probe", "probe", probe_n=3)
    (r,), _ = rounds.step()
    probe, topup = rollouts.calls
    assert set(probe.values()) == {3}  # a uniform probe of probe_n
    assert all(r.plan.n[pid] >= 3 for pid in r.ids) and sum(r.plan.n.values()) <= 32
    assert {pid: topup[pid] + 3 for pid in r.ids} == r.plan.n  # the top-up completes the solve
    assert {pid: o.trials for pid, o in r.outcomes.items()} == r.plan.n
    assert r.accepted == 8  # the probe's report and the top-up's, each of 4 prompts


def test_dapo_keeps_the_first_m_informative_groups_over_rounds(allocator):
    rounds, _ = _rounds(allocator, "dapo", "dapo")
    odd = [pid for b in range(4) for pid in rounds.sampler.batch(b) if int(pid[1:]) % 2]
    done, kept = rounds.step()
    assert [g.prompt_id for g in kept] == odd[:4]  # the informative groups, in order
    batches = 1 + next(b for b in range(4) if odd[3] in rounds.sampler.batch(b))
    assert len(done) == batches and rounds.batches == batches
    for r in done:
        assert set(r.plan.n.values()) == {8}  # uniform groups
        assert r.keep == [g.prompt_id in odd[:4] for g in r.groups]
    assert rounds.rollouts_total == 32 * batches


def test_dapo_starts_no_round_past_the_rollout_budget(allocator):
    rounds, _ = _rounds(allocator, "dapo", "dapo-budget", rollout_budget=32)
    done, kept = rounds.step()
    odd = [pid for pid in rounds.sampler.batch(0) if int(pid[1:]) % 2]
    assert len(done) == 1 and [g.prompt_id for g in kept] == odd and rounds.budget_spent()


def test_a_redone_batch_replays_its_journaled_allocation(allocator, tmp_path):
    first, _ = _rounds(allocator, "knapsack-eb", "redo", journal=Journal(tmp_path / "j.jsonl"))
    (r1,), _ = first.step()
    again, _ = _rounds(allocator, "knapsack-eb", "redo", journal=Journal(tmp_path / "j.jsonl"))
    (r2,), _ = again.step()  # a restarted run redoes batch 1
    assert r2.plan.replayed and r2.plan.allocation_id == r1.plan.allocation_id
    assert r2.plan.n == r1.plan.n
    assert r2.accepted == 0 and r2.duplicates == 4  # counted once in Redis


def test_a_runs_objective_reaches_every_solve_and_wins_over_the_loss_default(allocator):
    """A run that names an objective (trainer --objective, krl experiment --objective on either
    backend) solves with it; one that names none gets the objective made for its loss."""
    from krl.rl.strategies import solve_kw

    assert solve_kw(None, None) == {}
    assert solve_kw("paper", 0.0) == {"objective": "paper", "visit_half_life": 0.0}
    for ns, kw, want in (
        ("obj-default", solve_kw(None, None), "group-gradient"),
        ("obj-paper", solve_kw("paper", 3.0), "paper"),
    ):
        rounds, _ = _rounds(allocator, "knapsack-eb", ns, loss_agg="prompt-mean", solve_kw=kw)
        for _ in range(2):
            (r,), _ = rounds.step()
            meta = allocator._runner.run(allocator.allocator.allocation(ns, r.plan.allocation_id))
            assert meta["objective_name"] == want
