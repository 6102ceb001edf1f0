"""Per-prompt rollout counts in verl 0.9's PPO/GRPO loop (RayPPOTrainer.fit), as two calls.

verl's GRPO advantage (core_algos.compute_grpo_outcome_advantage and its vectorised twin) groups
rows by their `uid` and takes each group's own mean and std, so groups of different sizes need
no change there. What changes is how the batch is repeated for generation:

    plan = session.allocate(self.global_steps, prompt_ids_of(batch))      # AllocationSession
    batch.non_tensor_batch["uid"] = ...                                    # as verl does
    gen_batch_output = repeat_by_allocation(gen_batch, plan)               # was gen_batch.repeat(n)
    ... generate ...
    batch = repeat_by_allocation(batch, plan)                              # was batch.repeat(n)
    batch = batch.union(gen_batch_output)
    ... reward: batch.batch["token_level_scores"] ...
    report_batch(session, plan, batch)                                     # once per step

Config: keep `actor_rollout_ref.rollout.n` at the budget per prompt (verl sizes its mini-batches
with it; the budget keeps the step's total rows the same), allocate with
`budget = rollout.n * prompts`, and make that total divisible by the data-parallel size (verl
balances rows across ranks); declare the actor's loss to the allocator with
`AllocationSession(..., loss_agg=loss_agg_of(config.actor_rollout_ref.actor.loss_agg_mode))`.
docs/INTEGRATIONS.md has the whole recipe. Imports numpy only when
called, nothing from verl: a DataProto is used through select_idxs, non_tensor_batch and batch."""

from __future__ import annotations

from typing import Any

from krl_client.messages import LOSS_AGGS, ReportResult
from krl_client.session import AllocationSession, StepPlan

PROMPT_ID = "krl_prompt_id"


def loss_agg_of(verl_mode: str) -> str:
    """verl's actor loss_agg_mode in the allocator's names (its -norm variant divides the token
    sum by a constant: seq-mean-token-sum)."""
    name = verl_mode.removesuffix("-norm")
    if name not in LOSS_AGGS or name == "prompt-mean":  # prompt-mean is ours, not verl's
        raise ValueError(f"unknown verl loss_agg_mode {verl_mode!r}")
    return name


def repeat_by_allocation(batch: Any, plan: StepPlan) -> Any:
    """verl's `batch.repeat(n, interleave=True)` with each prompt's own n: row i (prompt
    plan.prompt_ids[i]) repeated plan.n[...] times, in order, each copy tagged with its prompt
    id (non_tensor_batch['krl_prompt_id']) for the report. A prompt allotted 0 is dropped."""
    import numpy as np

    if len(batch) != len(plan.n):
        raise ValueError(f"{len(batch)} rows in the batch for {len(plan.n)} allocated prompts")
    counts = np.fromiter(plan.n.values(), dtype=np.int64, count=len(plan.n))
    idx = np.repeat(np.arange(len(batch)), counts)
    out = batch.select_idxs(idx)
    out.non_tensor_batch[PROMPT_ID] = np.array(plan.prompt_ids, dtype=object)[idx]
    return out


def report_batch(
    session: AllocationSession,
    plan: StepPlan,
    batch: Any,
    *,
    score_key: str = "token_level_scores",
) -> ReportResult:
    """Report the step: a row's reward is the sum of its token-level scores (verl's outcome
    reward), its tokens the sum of its response_mask."""
    scores = batch.batch[score_key].sum(dim=-1).tolist()
    has_mask = "response_mask" in batch.batch.keys()  # noqa: SIM118 - TensorDict has no `in`
    mask = batch.batch["response_mask"] if has_mask else None
    tokens = mask.sum(dim=-1).tolist() if mask is not None else [0] * len(scores)
    rewards: dict[str, list[float]] = {pid: [] for pid in plan.n}
    lengths: dict[str, list[int]] = {pid: [] for pid in plan.n}
    for pid, r, t in zip(batch.non_tensor_batch[PROMPT_ID], scores, tokens, strict=True):
        rewards[pid].append(float(r))
        lengths[pid].append(int(t))
    return session.report(plan, rewards, tokens=lengths)
