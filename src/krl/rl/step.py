"""One training step's generation, the one code path of the trainer and the simulator: draw the
next batch of M prompts, allocate it, generate its rollouts and report their outcomes (one round
for the allocated strategies; knapsack-probe's round is a uniform probe and a top-up; dapo's
step is rounds until M informative groups, dynamic.py).

Every strategy goes through the allocator with its arguments (strategies.py), so histories are
recorded the same way for all: `uniform` and `dapo` ask for the allocator's mode uniform (dapo
filters the groups afterwards). Allocating and reporting are the slim client's AllocationSession's
(the one home of allocate and report with the journal, which every framework adapter uses too;
the journal marks each step reported, as the adapters' journals do), with the caller's loss
aggregation declared, so the allocator maximises the objective made for it
(krl_client.messages.OBJECTIVE_FOR_LOSS) unless solve_kw names one.

The journal (krl_client.session.Journal; the trainer's allocations.jsonl) records each batch's
allocation id and n per prompt before its rollouts are generated. A run resumed from an older
checkpoint replays the journaled allocation of a batch it redoes and reports under the same
allocation id: the allocator counts a report once per (allocation id, prompt), so a redone step
never counts twice in Redis.

What a rollout is stays with the caller: a `Rollouts` generates groups and says each group's
outcome, whether it is informative, and how a probe and its top-up make one group (the
trainer's are completions of the policy, the simulator's Bernoulli draws)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from krl.common.errors import NotFound
from krl.rl.data import EpochSampler
from krl.rl.dynamic import keep_mask
from krl.rl.strategies import DYNAMIC, PROBED, Strategy, strategy_args
from krl_client.messages import Outcome
from krl_client.session import AllocationSession, Journal, StepPlan

log = logging.getLogger(__name__)

G = TypeVar("G")

TOPUP_SEED = 1 << 40
"""Added to a round's generation seed for knapsack-probe's top-up."""


class Rollouts(Protocol[G]):
    def generate(self, ids: list[str], n: Mapping[str, int], seed: int) -> dict[str, G]:
        """n[pid] rollouts of each prompt of the batch (0: none): its group by prompt id, for
        every prompt with n > 0."""
        ...

    def outcome(self, group: G) -> Outcome:
        """The group's successes, trials and response tokens, as the allocator records them."""
        ...

    def informative(self, group: G) -> bool:
        """Whether the group's rewards differ (krl_client.session.informative)."""
        ...

    def merge(self, probe: G, topup: G) -> G:
        """One group from a prompt's probe and its top-up."""
        ...


@dataclass
class Round(Generic[G]):
    """One batch of M prompts: allocated, generated and reported."""

    ids: list[str]
    plan: StepPlan
    """The allocation its groups were reported under (knapsack-probe: the top-up's solve, whose
    n counts the probe too)."""
    groups: list[G]
    """In the batch's order, one for each prompt given rollouts."""
    outcomes: dict[str, Outcome]
    accepted: int
    duplicates: int
    t_alloc: float
    t_gen: float
    keep: list[bool] = field(default_factory=list)
    """Aligned with groups: whether the step trains on it (dapo drops some)."""


@dataclass
class StepRounds(Generic[G]):
    """The generation rounds of a run's steps; `batches` and `rollouts_total` are its state (a
    checkpoint keeps them)."""

    client: Any
    """An AllocatorClient (sync), or anything with its allocate and report."""
    rollouts: Rollouts[G]
    sampler: EpochSampler
    strategy: str
    budget: int
    min_n: int
    max_n: int
    probe_n: int = 0
    """knapsack-probe's probe per prompt."""
    dapo_max_rounds: int = 8
    rollout_budget: int = 0
    """Rollouts after which no further dapo round starts (0: no limit)."""
    seed: int = 0
    loss_agg: str | None = None
    solve_kw: dict[str, Any] = field(default_factory=dict)
    """Further Allocate arguments of the strategy's solve (objective, visit_half_life, ...);
    not of a uniform allocation."""
    journal: Journal | None = None
    topups: Journal | None = None
    """knapsack-probe's second allocation of each step, journaled like the first."""
    batches: int = 0
    """Batches of M prompts drawn so far (dapo: several a step)."""
    rollouts_total: int = 0

    def budget_spent(self) -> bool:
        return bool(self.rollout_budget) and self.rollouts_total >= self.rollout_budget

    def session(
        self, journal: Journal | None, prompts: int, strategy: str, budget: int, min_n: int
    ) -> AllocationSession:
        """The slim client's session that allocates a batch of `prompts` for `strategy` and
        reports its outcomes (the journal's allocation and reported marks)."""
        args = strategy_args(strategy, budget, prompts, min_n, self.max_n)
        if args["mode"] != "uniform":
            args.update(self.solve_kw)
        return AllocationSession(
            self.client,
            min_n=args.pop("min_n"),
            max_n=args.pop("max_n"),
            mode=args.pop("mode"),
            journal=journal,
            loss_agg=self.loss_agg,
            allocate_kw=args,
        )

    def round(self) -> Round[G]:
        """Draw the next batch of M prompts, allocate, generate and report it. knapsack-probe
        allocates twice: a uniform probe of probe_n rollouts per prompt, generated and
        reported, then the whole budget again over the same prompts (n >= probe_n) with what
        the probe showed in their histories; each prompt's group is its probe and its top-up."""
        g = self.batches + 1  # the batch's number: the allocator's step and the journal's key
        ids = self.sampler.batch(self.batches)
        probe = self.strategy in PROBED
        seed = self.seed * 1_000_003 + g
        t0 = time.monotonic()
        if probe:
            budget = self.probe_n * len(ids)
            session = self.session(self.journal, len(ids), Strategy.UNIFORM, budget, self.min_n)
        else:
            budget = self.budget
            session = self.session(self.journal, len(ids), self.strategy, budget, self.min_n)
        plan = session.allocate(g, ids, budget)
        t_alloc = time.monotonic() - t0
        t0 = time.monotonic()
        groups, accepted, dupes = self._generate_and_report(g, ids, session, plan, plan.n, seed)
        t_gen = time.monotonic() - t0
        if probe:
            t0 = time.monotonic()
            topup = self.session(self.topups, len(ids), self.strategy, self.budget, self.probe_n)
            full = topup.allocate(g, ids, self.budget)
            t_alloc += time.monotonic() - t0
            extra = {pid: full.n[pid] - plan.n.get(pid, 0) for pid in ids}
            t0 = time.monotonic()
            more, acc2, dup2 = self._generate_and_report(
                g, ids, topup, full, extra, seed + TOPUP_SEED
            )
            t_gen += time.monotonic() - t0
            for pid, top in more.items():
                groups[pid] = self.rollouts.merge(groups[pid], top) if pid in groups else top
            groups = {pid: groups[pid] for pid in ids if pid in groups}
            accepted, dupes = accepted + acc2, dupes + dup2
            plan = full
        outcomes = {pid: self.rollouts.outcome(gr) for pid, gr in groups.items()}
        self.batches += 1
        self.rollouts_total += sum(o.trials for o in outcomes.values())
        keep = [True] * len(groups)
        return Round(
            ids, plan, list(groups.values()), outcomes, accepted, dupes, t_alloc, t_gen, keep
        )

    def _generate_and_report(
        self,
        g: int,
        ids: list[str],
        session: AllocationSession,
        plan: StepPlan,
        n: Mapping[str, int],
        seed: int,
    ) -> tuple[dict[str, G], int, int]:
        """Generate n[pid] rollouts of each prompt and report them under the plan's allocation
        through its session: the groups by prompt id in the batch's order, and the report's
        accepted and duplicate counts."""
        asked = [pid for pid in ids if n[pid] > 0]
        if not asked:
            return {}, 0, 0
        made = self.rollouts.generate(ids, n, seed)
        missing = [pid for pid in asked if pid not in made]
        if missing:
            raise RuntimeError(f"batch {g}: no group came back for {len(missing)} prompts")
        groups = {pid: made[pid] for pid in asked}
        outcomes = [self.rollouts.outcome(gr) for gr in groups.values()]
        try:
            rep = session.report_outcomes(plan, outcomes)
            return groups, rep.accepted, int(rep.duplicates)  # a count over gRPC
        except NotFound as e:  # a replayed allocation that expired meanwhile
            log.warning("batch %d: report not recorded: %s", g, e)
            return groups, 0, len(outcomes)

    def step(self) -> tuple[list[Round[G]], list[G]]:
        """The step's rounds and the groups it trains on: one round for the allocated
        strategies; for dapo, rounds until M informative groups (dynamic.py), at most
        dapo_max_rounds, and none that would start past the rollout budget."""
        first = self.round()
        if self.strategy not in DYNAMIC:
            return [first], first.groups
        rounds: list[Round[G]] = [first]
        kept: list[G] = []
        m = self.sampler.batch_size
        while True:
            r = rounds[-1]
            r.keep = keep_mask([self.rollouts.informative(gr) for gr in r.groups], m - len(kept))
            kept += [gr for gr, k in zip(r.groups, r.keep, strict=True) if k]
            if len(kept) >= m or len(rounds) >= self.dapo_max_rounds or self.budget_spent():
                return rounds, kept
            rounds.append(self.round())
