"""The trainer's record of one step: the metrics.jsonl row (its keys are what report.py, the
simulator and the experiments read) and the Prometheus metrics and status set from it."""

from __future__ import annotations

import time
from collections import Counter as Tally
from typing import TYPE_CHECKING, Any

import numpy as np

from krl.rl.rows import StepRow
from krl.trainer.stats import GroupOutcome, batch_stats
from krl_client.session import informative as is_informative

if TYPE_CHECKING:
    from krl.trainer.loop import Trainer


def step_row(
    t: Trainer,
    k: int,
    rounds: list,
    trained: list,
    adv: Any,
    trained_samples: int,
    res: Any,
    *,
    t_train: float,
    t_sync: float,
    t_start: float,
) -> tuple[StepRow, list[int]]:
    """The step's row (krl.rl.rows.StepRow), and the n of every prompt it allocated."""
    s = t.s
    plan = rounds[0].plan
    groups = [g for r in rounds for g in r.groups]
    informative = sum(is_informative([c.reward for c in g.completions]) for g in groups)
    outcomes = {pid: o for r in rounds for pid, o in r.outcomes.items()}
    unasked = sum(len(r.ids) - len(r.groups) for r in rounds)
    st = batch_stats(
        [GroupOutcome(len(g.completions), outcomes[g.prompt_id].successes) for g in groups]
        + [GroupOutcome(0, 0)] * unasked
    )
    stats = st.as_dict()
    if st.rollouts:  # the rollouts that carried a gradient (dapo drops some informative ones)
        stats["effective_rollout_ratio"] = trained_samples / st.rollouts
    tokens = sum(o.total_tokens for o in outcomes.values())
    rewards = [c.reward for g in groups for c in g.completions]
    ns = [n for r in rounds for n in r.plan.n.values()]
    t_alloc = sum(r.t_alloc for r in rounds)
    t_gen = sum(r.t_gen for r in rounds)
    step_s = time.monotonic() - t_start
    row: StepRow = {
        "kind": "step",
        "step": k,
        "time": time.time(),
        "epoch": round(t.batches * s.prompts_per_step / len(t.source.train), 3),
        "policy_version": t.version,
        "allocation_id": plan.allocation_id,
        "replayed": plan.replayed,
        "solve_ms": round(sum(r.plan.solve_ms for r in rounds), 3),
        "reward": float(np.mean(rewards)) if rewards else 0.0,
        **stats,
        "rounds": len(rounds),
        "rollouts_total": t.rollouts_total,
        "zero_variance_groups": len(groups) - informative,
        "dropped_informative": informative - (len(trained) - sum(adv.zero_variance)),
        "tokens": tokens,
        "n_counts": {str(n): c for n, c in sorted(Tally(ns).items())},
        "loss": res.loss if res else None,
        "grad_norm": res.grad_norm if res else None,
        "clip_fraction": res.clip_fraction if res else None,
        "behaviour_kl": res.behaviour_kl if res else None,
        "trained_sequences": res.sequences if res else 0,
        "reported": sum(r.accepted for r in rounds),
        "report_duplicates": sum(r.duplicates for r in rounds),
        "t_allocate": round(t_alloc, 4),
        "t_generate": round(t_gen, 4),
        "t_train": round(t_train, 4),
        "t_weight_sync": round(t_sync, 4),
        "t_step": round(step_s, 4),
        "rollouts_per_s": round(st.rollouts / t_gen, 1) if t_gen > 0 else None,
    }
    return row, ns


def observe(t: Trainer, row: StepRow, ns: list[int], res: Any) -> None:
    t_alloc, t_gen = row["t_allocate"], row["t_generate"]
    t_train, t_sync, step_s = row["t_train"], row["t_weight_sync"], row["t_step"]
    m = t.metrics
    m.step.set(t.step)
    m.effective_rollout_ratio.set(row["effective_rollout_ratio"])
    m.effective_prompt_ratio.set(row["effective_prompt_ratio"])
    m.all_correct.set(row["all_correct"])
    m.all_wrong.set(row["all_wrong"])
    m.reward.set(row["reward"])
    if res is not None:
        m.loss.set(res.loss)
    m.rollouts.inc(row["rollouts"])
    m.tokens.inc(row["tokens"])
    m.zero_variance_groups.inc(row["zero_variance_groups"])
    m.rollouts_per_step.set(row["rollouts"])
    m.tokens_per_step.set(row["tokens"])
    m.max_n.set(row["max_n"])
    for n in ns:
        m.n_per_prompt.observe(n)
    for phase, secs in (
        ("allocate", t_alloc),
        ("generate", t_gen),
        ("train", t_train),
        ("weight_sync", t_sync),
    ):
        m.phase_seconds.labels(phase).observe(secs)
    m.step_seconds.observe(step_s)
    t.status.step = t.step
    t.status.mean_reward = row["reward"]
    t.status.effective_rollout_ratio = row["effective_rollout_ratio"]
