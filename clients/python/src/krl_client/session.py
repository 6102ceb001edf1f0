"""AllocationSession: the allocator in a trainer's step, whatever the framework.

    session = AllocationSession(client, budget_per_prompt=8, journal="run/allocations.jsonl")
    plan = session.allocate(step, prompt_ids)           # n per prompt from the knapsack
    rows = plan.expand(batch_rows)                      # each row repeated n times, in order
    ... generate len(rows) completions and score them ...
    session.report(plan, rewards)                       # grouped per prompt, reported once
    logger.log(session.metrics(plan, rewards))          # knapsack/* keys

The journal (JSON lines) records each step's allocation before its rollouts are generated. A run
resumed from a checkpoint that redoes a step gets that step's journaled allocation back and
reports under the same allocation id; the allocator counts a report once per (allocation id,
prompt), so a redone step never counts twice. Rewards may be graded: a rollout succeeds when its
reward is at least `success_threshold`, and a group is informative when its rewards differ
(non-zero variance), which is what a group-normalised advantage needs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from krl_client.messages import Outcome, ReportResult, check_loss_agg

T = TypeVar("T")


@dataclass(frozen=True)
class StepPlan:
    """One step's allocation: n per prompt id, in the batch's order."""

    step: int
    allocation_id: str
    n: dict[str, int]
    replayed: bool = False
    """True when the allocation came from the journal (a redone step), not a fresh Allocate."""
    solve_ms: float = 0.0
    objective: float = 0.0

    @property
    def prompt_ids(self) -> list[str]:
        return list(self.n)

    @property
    def total(self) -> int:
        return sum(self.n.values())

    def expand(self, rows: Sequence[T]) -> list[T]:
        """Each row (aligned with the prompt ids) repeated by its n, groups contiguous."""
        if len(rows) != len(self.n):
            raise ValueError(f"{len(rows)} rows for {len(self.n)} allocated prompts")
        return [row for row, k in zip(rows, self.n.values(), strict=True) for _ in range(k)]

    def group_index(self) -> list[int]:
        """For each expanded sample, the index of its prompt in the batch."""
        return [i for i, k in enumerate(self.n.values()) for _ in range(k)]

    def groups(self, values: Sequence[T]) -> dict[str, list[T]]:
        """Per-sample values (aligned with expand's order) grouped by prompt id."""
        if len(values) != self.total:
            raise ValueError(f"{len(values)} values for {self.total} allocated rollouts")
        out: dict[str, list[T]] = {}
        start = 0
        for pid, k in self.n.items():
            out[pid] = list(values[start : start + k])
            start += k
        return out


RewardsLike = Sequence[float] | Mapping[str, Sequence[float]]


def grouped_rewards(plan: StepPlan, rewards: RewardsLike) -> dict[str, list[float]]:
    """Rewards per prompt id, from a flat sequence in expand's order or a mapping; refuses NaN,
    unknown prompt ids and groups larger than their allocation (smaller ones are allowed: a
    rollout can fail to finish)."""
    by_pid = dict(rewards) if isinstance(rewards, Mapping) else plan.groups(rewards)
    for pid, rs in by_pid.items():
        if pid not in plan.n:
            raise ValueError(f"rewards for {pid!r}, which this step did not allocate")
        if len(rs) > plan.n[pid]:
            raise ValueError(f"{len(rs)} rewards for {pid!r}, allocated {plan.n[pid]}")
        for j, r in enumerate(rs):
            if not math.isfinite(float(r)):
                raise ValueError(f"reward {j} of {pid!r} is {r}; rewards must be finite")
    return {pid: [float(r) for r in rs] for pid, rs in by_pid.items()}


def informative(rewards: Sequence[float]) -> bool:
    """A group teaches a group-normalised policy gradient only if its rewards differ."""
    return len(rewards) >= 2 and max(rewards) > min(rewards)


def outcomes(
    plan: StepPlan,
    rewards: RewardsLike,
    *,
    success_threshold: float = 1.0,
    tokens: RewardsLike | None = None,
) -> list[Outcome]:
    """The allocator's outcomes: successes (reward >= success_threshold), trials and the
    response tokens per prompt (tokens per sample, in the same shape as rewards)."""
    by_pid = grouped_rewards(plan, rewards)
    tok = (
        {}
        if tokens is None
        else (dict(tokens) if isinstance(tokens, Mapping) else plan.groups(tokens))
    )
    return [
        Outcome(
            pid,
            sum(r >= success_threshold for r in rs),
            len(rs),
            int(sum(tok.get(pid, ()))),
        )
        for pid, rs in by_pid.items()
        if rs
    ]


def step_metrics(
    plan: StepPlan, rewards: RewardsLike | None = None, *, success_threshold: float = 1.0
) -> dict[str, float]:
    """Peer-style keys to merge into the trainer's logger."""
    ns = list(plan.n.values())
    out = {
        "knapsack/n_mean": sum(ns) / max(len(ns), 1),
        "knapsack/n_max": float(max(ns, default=0)),
        "knapsack/n_min": float(min(ns, default=0)),
        "knapsack/rollouts": float(sum(ns)),
        "knapsack/solve_ms": plan.solve_ms,
        "knapsack/replayed": float(plan.replayed),
    }
    if rewards is not None:
        groups = [rs for rs in grouped_rewards(plan, rewards).values() if rs]
        total = sum(map(len, groups))
        good = [rs for rs in groups if informative(rs)]
        out["knapsack/effective_rollout_ratio"] = sum(map(len, good)) / max(total, 1)
        out["knapsack/informative_prompt_ratio"] = len(good) / max(len(groups), 1)
        out["knapsack/all_correct_ratio"] = sum(
            min(rs) >= success_threshold for rs in groups if not informative(rs)
        ) / max(len(groups), 1)
        out["knapsack/all_wrong_ratio"] = sum(
            max(rs) < success_threshold for rs in groups if not informative(rs)
        ) / max(len(groups), 1)
    return out


class Journal:
    """Steps' allocations in a JSON-lines file, appended and fsync'd before rollouts start.

    A process that dies while appending leaves a torn last line (no newline at its end): it is
    cut off when the journal is opened, before anything is appended after it, so the next record
    starts on a line of its own. Any other line that is not a record is an error naming it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._by_step: dict[int, StepPlan] = {}
        self.reported: set[int] = set()
        raw = self.path.read_bytes() if self.path.exists() else b""
        whole = raw[: raw.rfind(b"\n") + 1]
        if len(whole) < len(raw):  # the torn tail of an append that never finished
            with self.path.open("r+b") as f:
                f.truncate(len(whole))
                f.flush()
                os.fsync(f.fileno())
        for i, line in enumerate(whole.decode("utf-8", "replace").split("\n"), start=1):
            if line.strip():
                self._read(i, line)

    def _read(self, number: int, line: str) -> None:
        try:
            d = json.loads(line)
            step = int(d["step"])
            if d.get("reported"):
                self.reported.add(step)
            else:
                n = {str(k): int(v) for k, v in d["n"].items()}
                self._by_step[step] = StepPlan(step, str(d["allocation_id"]), n, replayed=True)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(
                f"{self.path}, line {number}: not a journal record ({type(e).__name__}: {e}): "
                f"{line[:80]!r}"
            ) from None

    def get(self, step: int) -> StepPlan | None:
        return self._by_step.get(step)

    def _append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def record(self, plan: StepPlan) -> None:
        self._by_step[plan.step] = plan
        self._append({"step": plan.step, "allocation_id": plan.allocation_id, "n": plan.n})

    def mark_reported(self, step: int) -> None:
        if step not in self.reported:
            self.reported.add(step)
            self._append({"step": step, "reported": True})

    def replay(self, step: int, prompt_ids: Sequence[str]) -> StepPlan | None:
        """The journaled plan of a redone step; refuses one whose prompts differ."""
        old = self.get(step)
        if old is not None and list(old.n) != list(prompt_ids):
            raise ValueError(
                f"step {step}: the journal {self.path} allocated other prompts for this step; "
                "it belongs to another run or another data order"
            )
        return old


@dataclass
class _SessionBase:
    client: Any
    budget_per_prompt: float = 8.0
    """The budget of a step is round(budget_per_prompt * prompts) unless allocate gets one."""
    min_n: int = 2
    max_n: int = 64
    mode: str = "eb"
    success_threshold: float = 1.0
    journal: str | os.PathLike[str] | Journal | None = None
    loss_agg: str | None = None
    """How the trainer's loss weighs rollouts (messages.LOSS_AGGS), declared with every Allocate
    so that the allocator maximises the objective made for it; None: not declared."""
    allocate_kw: dict[str, Any] = field(default_factory=dict)
    """Further arguments of client.allocate (objective, visit_half_life, namespace, ...)."""

    def __post_init__(self) -> None:
        check_loss_agg(self.loss_agg)
        if self.journal is not None and not isinstance(self.journal, Journal):
            self.journal = Journal(self.journal)

    def _budget(self, prompts: int, budget: int | None) -> int:
        return budget if budget is not None else round(self.budget_per_prompt * prompts)

    def _args(self, prompt_ids: Sequence[str], step: int, budget: int | None) -> dict:
        return dict(
            prompt_ids=list(prompt_ids),
            budget=self._budget(len(prompt_ids), budget),
            step=step,
            min_n=self.min_n,
            max_n=self.max_n,
            mode=self.mode,
            **({"loss_agg": self.loss_agg} if self.loss_agg else {}),
            **self.allocate_kw,
        )

    def _plan(self, step: int, alloc: Any) -> StepPlan:
        plan = StepPlan(
            step, alloc.allocation_id, dict(alloc.n), False, alloc.solve_ms, alloc.objective
        )
        if self.journal is not None:
            self.journal.record(plan)
        return plan

    def _replay(self, step: int, prompt_ids: Sequence[str]) -> StepPlan | None:
        return self.journal.replay(step, prompt_ids) if self.journal is not None else None

    def _outcomes(self, plan: StepPlan, rewards: RewardsLike, tokens: RewardsLike | None):
        return outcomes(plan, rewards, success_threshold=self.success_threshold, tokens=tokens)

    def _reported(self, plan: StepPlan) -> None:
        if self.journal is not None:
            self.journal.mark_reported(plan.step)

    def metrics(self, plan: StepPlan, rewards: RewardsLike | None = None) -> dict[str, float]:
        return step_metrics(plan, rewards, success_threshold=self.success_threshold)


class AllocationSession(_SessionBase):
    """With a sync AllocatorClient."""

    def allocate(self, step: int, prompt_ids: Sequence[str], budget: int | None = None) -> StepPlan:
        old = self._replay(step, prompt_ids)
        if old is not None:
            return old
        return self._plan(step, self.client.allocate(**self._args(prompt_ids, step, budget)))

    def report(
        self, plan: StepPlan, rewards: RewardsLike, tokens: RewardsLike | None = None
    ) -> ReportResult:
        """Report the step's rewards (one per rollout, in the plan's expanded order)."""
        return self.report_outcomes(plan, self._outcomes(plan, rewards, tokens))

    def report_outcomes(self, plan: StepPlan, outcomes: Sequence[Outcome]) -> ReportResult:
        """Report outcomes already counted per prompt, and mark the step reported."""
        res = self.client.report(plan.allocation_id, outcomes, **_ns(self.allocate_kw))
        self._reported(plan)
        return res


class AsyncAllocationSession(_SessionBase):
    """With an AsyncAllocatorClient: the same steps, awaited."""

    async def allocate(
        self, step: int, prompt_ids: Sequence[str], budget: int | None = None
    ) -> StepPlan:
        old = self._replay(step, prompt_ids)
        if old is not None:
            return old
        alloc = await self.client.allocate(**self._args(prompt_ids, step, budget))
        return self._plan(step, alloc)

    async def report(
        self, plan: StepPlan, rewards: RewardsLike, tokens: RewardsLike | None = None
    ) -> ReportResult:
        return await self.report_outcomes(plan, self._outcomes(plan, rewards, tokens))

    async def report_outcomes(self, plan: StepPlan, outcomes: Sequence[Outcome]) -> ReportResult:
        res = await self.client.report(plan.allocation_id, outcomes, **_ns(self.allocate_kw))
        self._reported(plan)
        return res


def _ns(kw: Mapping[str, Any]) -> dict[str, Any]:
    return {"namespace": kw["namespace"]} if "namespace" in kw else {}
