"""Allocation strategies on one code path, and the journal that keeps a resumed run consistent
with the allocator's Redis state.

Every strategy goes through the allocator (so histories are recorded the same way for all):
`uniform` is the allocator's solve with min_n = max_n = the budget / M, which forces the uniform
split; `knapsack-eb` (the default) the expected value under the empirical-Bayes grid posterior;
`knapsack-paper` the paper's point estimate with its fallback; `knapsack-bayes` the older
single-Beta posterior; `dapo` (dynamic sampling, dynamic.py) asks for uniform groups like
`uniform` and filters them afterwards; `knapsack-dapo` allocates each round like `knapsack-eb`
and filters like `dapo` (the paper's combination).

The journal (allocations.jsonl in the run folder) records each step's allocation id and n per
prompt before its rollouts are generated. A run resumed from an older checkpoint replays the
journaled allocation of a step it redoes, and reports under the same allocation id: the allocator
counts a report once per (allocation id, prompt), so a redone step never counts twice in Redis."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from krl.allocator.client import AllocatorClient


@dataclass(frozen=True)
class Plan:
    allocation_id: str
    n: dict[str, int]
    replayed: bool = False
    solve_ms: float = 0.0
    objective: float = 0.0


DYNAMIC = frozenset({"dapo", "knapsack-dapo"})
"""Strategies that drop zero-variance groups and refill from the next prompts (dynamic.py)."""


def strategy_args(strategy: str, budget: int, prompts: int, min_n: int, max_n: int) -> dict:
    if strategy in ("knapsack-eb", "knapsack-dapo"):
        return {"mode": "eb", "min_n": min_n, "max_n": max_n}
    if strategy == "knapsack-bayes":
        return {"mode": "bayes", "min_n": min_n, "max_n": max_n}
    if strategy == "knapsack-paper":
        return {"mode": "paper", "min_n": min_n, "max_n": max_n, "fallback": True}
    if strategy in ("uniform", "dapo"):
        lo, hi = budget // prompts, -(-budget // prompts)
        return {"mode": "bayes", "min_n": lo, "max_n": hi}
    raise ValueError(f"unknown strategy {strategy!r}")


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._by_step: dict[int, Plan] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    d = json.loads(line)
                    self._by_step[d["step"]] = Plan(d["allocation_id"], d["n"], replayed=True)

    def get(self, step: int) -> Plan | None:
        return self._by_step.get(step)

    def record(self, step: int, plan: Plan) -> None:
        self._by_step[step] = plan
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "allocation_id": plan.allocation_id,
                                "n": plan.n}) + "\n")  # fmt: skip
            f.flush()


def plan_step(
    client: AllocatorClient,
    journal: Journal,
    *,
    step: int,
    prompt_ids: list[str],
    strategy: str,
    budget: int,
    min_n: int,
    max_n: int,
) -> Plan:
    """The step's allocation: the journaled one when this step was allocated before, else a
    fresh Allocate (recorded before any rollout is generated)."""
    old = journal.get(step)
    if old is not None:
        if list(old.n) != list(prompt_ids):
            raise RuntimeError(
                f"step {step}: the journal's prompts differ from the data order's; the run "
                "folder does not belong to these settings"
            )
        return old
    args = strategy_args(strategy, budget, len(prompt_ids), min_n, max_n)
    a = client.allocate(prompt_ids, budget, step=step, **args)
    plan = Plan(a.allocation_id, dict(a.n), solve_ms=a.solve_ms, objective=a.objective)
    journal.record(step, plan)
    return plan
