"""Allocation strategies on one code path, and the journal that keeps a resumed run consistent
with the allocator's Redis state.

Every strategy goes through the allocator (so histories are recorded the same way for all):
`uniform` is the allocator's mode uniform (the budget split evenly); `knapsack-eb` (the default)
the expected value under the empirical-Bayes grid posterior; `knapsack-paper` the paper's point
estimate with its fallback; `knapsack-bayes` the older single-Beta posterior; `dapo` (dynamic
sampling, krl.rl.dynamic) asks for uniform groups like `uniform` and filters them afterwards;
`knapsack-dapo` allocates each round like `knapsack-eb` and filters like `dapo` (the paper's
combination); `knapsack-probe` allocates a uniform probe, then its solve (krl.rl.strategies).

The step is the slim client's AllocationSession (one home for allocate-with-journal, which
every framework adapter uses too), with the trainer's strategy as its arguments and its loss
aggregation declared, so the allocator maximises the objective made for it
(krl_client.messages.OBJECTIVE_FOR_LOSS) unless its setting names one.

The journal (krl_client.session.Journal; allocations.jsonl in the run folder) records each step's
allocation id and n per prompt before its rollouts are generated. A run resumed from an older
checkpoint replays the journaled allocation of a step it redoes, and reports under the same
allocation id: the allocator counts a report once per (allocation id, prompt), so a redone step
never counts twice in Redis."""

from __future__ import annotations

from krl.rl.strategies import strategy_args
from krl_client import AllocatorClient
from krl_client.session import AllocationSession, Journal, StepPlan


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
    loss_agg: str | None = None,
) -> StepPlan:
    """The step's allocation: the journaled one when this step was allocated before, else a
    fresh Allocate (recorded before any rollout is generated)."""
    args = strategy_args(strategy, budget, len(prompt_ids), min_n, max_n)
    session = AllocationSession(
        client,
        min_n=args.pop("min_n"),
        max_n=args.pop("max_n"),
        mode=args.pop("mode"),
        journal=journal,
        loss_agg=loss_agg,
        allocate_kw=args,
    )
    return session.allocate(step, prompt_ids, budget)
