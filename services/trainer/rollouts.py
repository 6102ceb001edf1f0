"""A training step's generation rounds: draw the next batch of M prompts, allocate, generate
and report it (one round for the allocated strategies; for dapo, rounds until M informative
groups; knapsack-probe's round is a probe and a top-up)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from krl.clients.rollout import Group, PromptSpec
from krl.common.errors import NotFound
from krl.rl.dynamic import keep_mask
from krl.rl.strategies import DYNAMIC, PROBED, Strategy
from krl.tasks.base import Task
from krl.trainer.allocation import plan_step
from krl_client.session import Journal, StepPlan, informative

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
    """Draw the next batch of M prompts, allocate, generate and report it. knapsack-probe
    allocates twice: a uniform probe of probe_n rollouts per prompt, generated and reported,
    then the whole budget again over the same prompts (n >= probe_n) with what the probe
    showed in their histories; each prompt's group is its probe and its top-up."""
    s = t.s
    g = t.batches + 1  # the batch's number: the allocator's step and the journal's key
    ids = t.sampler.batch(t.batches)
    probe = s.strategy in PROBED

    def allocate(journal: Journal, strategy: str, budget: int, min_n: int) -> StepPlan:
        return plan_step(
            t.allocator,
            journal,
            step=g,
            prompt_ids=ids,
            strategy=strategy,
            budget=budget,
            min_n=min_n,
            max_n=s.max_n,
            loss_agg=s.loss_agg,
        )

    t0 = time.monotonic()
    if probe:
        plan = allocate(t.journal, Strategy.UNIFORM, s.probe_rollouts * len(ids), s.min_n)
    else:
        plan = allocate(t.journal, s.strategy, s.budget, s.min_n)
    t_alloc = time.monotonic() - t0
    tasks = {pid: t.source.get(pid) for pid in ids}
    seed = s.seed * 1_000_003 + g
    t0 = time.monotonic()
    ordered, outcomes, accepted, dupes = _generate_and_report(t, step, plan, plan.n, tasks, seed)
    t_gen = time.monotonic() - t0
    if probe:
        t0 = time.monotonic()
        full = allocate(t.topups, s.strategy, s.budget, s.probe_rollouts)  # its SOLVED solve
        t_alloc += time.monotonic() - t0
        extra = {pid: full.n[pid] - plan.n.get(pid, 0) for pid in ids}
        t0 = time.monotonic()
        more, _, acc2, dup2 = _generate_and_report(t, step, full, extra, tasks, seed + (1 << 40))
        t_gen += time.monotonic() - t0
        by_id = {gr.prompt_id: gr for gr in more}
        ordered = [_merged(gr, by_id.get(gr.prompt_id)) for gr in ordered]
        outcomes = {gr.prompt_id: _outcome(gr) for gr in ordered}
        accepted, dupes = accepted + acc2, dupes + dup2
        plan = full
    t.batches += 1
    t.rollouts_total += sum(o[1] for o in outcomes.values())
    return Round(ids, plan, tasks, ordered, outcomes, accepted, dupes, t_alloc, t_gen)


def _outcome(gr: Group) -> tuple[int, int, int]:
    return (
        sum(c.success for c in gr.completions),
        len(gr.completions),
        sum(len(c.token_ids) for c in gr.completions),
    )


def _binary(gr: Group) -> Group:
    """The group with each reward replaced by its success (1 or 0)."""
    return replace(gr, completions=[replace(c, reward=float(c.success)) for c in gr.completions])


def _merged(a: Group, b: Group | None) -> Group:
    return a if b is None else replace(a, completions=a.completions + b.completions)


def _generate_and_report(
    t: Trainer,
    step: int,
    plan: StepPlan,
    n: dict[str, int],
    tasks: dict[str, Task],
    seed: int,
) -> tuple[list[Group], dict[str, tuple[int, int, int]], int, int]:
    """Generate n[pid] rollouts of each prompt and report them under the plan's allocation:
    the groups in the batch's order, their outcomes (successes, trials, tokens), and the
    report's accepted and duplicate counts."""
    s = t.s
    specs = [
        PromptSpec(
            pid,
            k,
            text=tasks[pid].prompt,
            answer=tasks[pid].answer,
            verifier=tasks[pid].verifier,
        )
        for pid, k in n.items()
        if k > 0
    ]
    if not specs:
        return [], {}, 0, 0
    groups = t.generate(
        specs,
        temperature=s.temperature,
        top_p=s.top_p,
        max_new_tokens=s.max_new_tokens,
        seed=seed,
    )
    missing = [p.prompt_id for p in specs if p.prompt_id not in groups]
    if missing:
        raise RuntimeError(f"step {step}: no group came back for {len(missing)} prompts")
    ordered = [groups[p.prompt_id] for p in specs]
    if s.reward == "success":
        ordered = [_binary(gr) for gr in ordered]
    outcomes = {gr.prompt_id: _outcome(gr) for gr in ordered}
    try:
        rep = t.allocator.report(plan.allocation_id, outcomes)
        return ordered, outcomes, rep.accepted, int(rep.duplicates)  # a count over gRPC
    except NotFound as e:  # a replayed allocation that expired meanwhile
        log.warning("step %d: report not recorded: %s", step, e)
        return ordered, outcomes, 0, len(outcomes)


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
            [informative([c.reward for c in g.completions]) for g in r.groups],
            s.prompts_per_step - len(kept),
        )
        kept += [g for g, keep in zip(r.groups, mask, strict=True) if keep]
        if len(kept) >= s.prompts_per_step or len(rounds) >= s.dapo_max_rounds or t.budget_spent():
            return rounds, kept
        rounds.append(next_round(t, step))
