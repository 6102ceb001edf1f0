"""A training step's generation rounds: draw the next batch of M prompts, allocate, generate
and report it (one round for the allocated strategies; for dapo, rounds until M informative
groups)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from krl.common.errors import NotFound
from krl.rl.dynamic import keep_mask
from krl.rl.strategies import DYNAMIC
from krl.rollout.client import Group, PromptSpec
from krl.tasks.base import Task
from krl.trainer.allocation import plan_step
from krl_client.session import StepPlan

if TYPE_CHECKING:
    from krl.trainer.loop import Trainer

log = logging.getLogger(__name__)


@dataclass
class Round:
    """One batch of M prompts: allocated, generated and reported."""

    ids: list[str]
    plan: StepPlan
    tasks: dict[str, Task]
    groups: list[Group]
    outcomes: dict[str, tuple[int, int, int]]
    """prompt id -> (successes, trials, tokens)"""
    accepted: int
    duplicates: int
    t_alloc: float
    t_gen: float


def next_round(t: Trainer, step: int) -> Round:
    """Draw the next batch of M prompts, allocate, generate and report it."""
    s = t.s
    g = t.batches + 1  # the batch's number: the allocator's step and the journal's key
    ids = t.sampler.batch(t.batches)
    t0 = time.monotonic()
    plan: StepPlan = plan_step(
        t.allocator,
        t.journal,
        step=g,
        prompt_ids=ids,
        strategy=s.strategy,
        budget=s.budget,
        min_n=s.min_n,
        max_n=s.max_n,
        loss_agg=s.loss_agg,
    )
    t_alloc = time.monotonic() - t0
    tasks = {pid: t.source.get(pid) for pid in ids}
    specs = [
        PromptSpec(
            pid,
            n,
            text=tasks[pid].prompt,
            answer=tasks[pid].answer,
            verifier=tasks[pid].verifier,
        )
        for pid, n in plan.n.items()
        if n > 0
    ]
    t0 = time.monotonic()
    groups = t.generate(
        specs,
        temperature=s.temperature,
        top_p=s.top_p,
        max_new_tokens=s.max_new_tokens,
        seed=s.seed * 1_000_003 + g,
    )
    t_gen = time.monotonic() - t0
    missing = [p.prompt_id for p in specs if p.prompt_id not in groups]
    if missing:
        raise RuntimeError(f"step {step}: no group came back for {len(missing)} prompts")
    ordered = [groups[p.prompt_id] for p in specs]
    outcomes = {
        gr.prompt_id: (
            sum(c.success for c in gr.completions),
            len(gr.completions),
            sum(len(c.token_ids) for c in gr.completions),
        )
        for gr in ordered
    }
    try:
        rep = t.allocator.report(plan.allocation_id, outcomes)
        accepted, dupes = rep.accepted, int(rep.duplicates)  # a count over gRPC
    except NotFound as e:  # a replayed allocation that expired meanwhile
        log.warning("step %d: report not recorded: %s", step, e)
        accepted, dupes = 0, len(outcomes)
    t.batches += 1
    t.rollouts_total += sum(o[1] for o in outcomes.values())
    return Round(ids, plan, tasks, ordered, outcomes, accepted, dupes, t_alloc, t_gen)


def step_rounds(t: Trainer, step: int) -> tuple[list[Round], list[Group]]:
    """The step's generation rounds and the groups it trains on: one round for the
    allocated strategies; for dapo, rounds until M informative groups (dynamic.py), at most
    dapo_max_rounds, and none that would start past the rollout budget."""
    s = t.s
    first = next_round(t, step)
    if s.strategy not in DYNAMIC:
        return [first], first.groups
    rounds, kept = [first], []
    while True:
        r = rounds[-1]
        mask = keep_mask(
            [(o[1], o[0]) for o in (r.outcomes[g.prompt_id] for g in r.groups)],
            s.prompts_per_step - len(kept),
        )
        kept += [g for g, keep in zip(r.groups, mask, strict=True) if keep]
        if len(kept) >= s.prompts_per_step or len(rounds) >= s.dapo_max_rounds or t.budget_spent():
            return rounds, kept
        rounds.append(next_round(t, step))
