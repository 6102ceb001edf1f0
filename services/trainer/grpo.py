"""GRPO over groups of different sizes: advantages, the token-level clipped policy-gradient loss
and one optimiser step with micro-batching by tokens. Pure maths plus torch; no services.

Advantages (group i with rewards r_i1..r_in_i, any n_i >= 1):

    A_ij = (r_ij - mean_i) / (std_i + eps)     scale = "std"   (GRPO)
    A_ij =  r_ij - mean_i                      scale = "none"  (Dr. GRPO, no std bias)

then clipped to [-adv_clip, adv_clip]. std_i is the population std over the group's own n_i
rewards, so a group of 3 and a group of 40 are each normalised by their own statistics. A group
whose rewards are all equal has A = 0 for every member: it gives no gradient, is counted as
zero-variance and is left out of the batch (its tokens do not dilute the loss either).

Loss: for every completion token t of every kept sequence s,

    ratio_t = exp(logp_theta(t) - logp_behaviour(t))
    l_t = max(-A * ratio_t, -A * clip(ratio_t, 1 - eps_low, 1 + eps_high)) + beta * k3_t
    loss = sum_s w_s sum_{t in s} l_t

where the weights w_s are the loss aggregation (verl's names; T tokens, S sequences and G groups
kept, T_g the kept tokens of group g, |s| the tokens of s):

    token-mean            w_s = 1 / T              a group weighs its share of the tokens: n-fold
    seq-mean-token-sum    w_s = 1 / S              a group weighs its share of sequences: n-fold
    seq-mean-token-mean   w_s = 1 / (S |s|)        likewise, each sequence averaged over tokens
    prompt-mean           w_s = 1 / (G T_g)        every group weighs 1 / G whatever its n: more
                                                   rollouts make its estimate less noisy, they do
                                                   not make the prompt count more

so under the first three a prompt given n rollouts counts n times in the update, and the
allocation changes what is learned, not only how well it is estimated (allocator objectives:
the trainer declares its aggregation and the allocator maximises the objective made for it).

where logp is log_softmax(logits / T) (the rollout service reports behaviour logprobs the same
way), and k3_t = exp(ref - theta) - (ref - theta) - 1 is the KL estimate to a frozen reference
policy (only when beta > 0). Micro-batches are formed by tokens and their gradients summed with
the weights computed over the whole batch, so the update equals the full-batch update."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from krl_client.messages import LOSS_AGGS, LossAgg
from krl_client.session import informative


@dataclass(frozen=True)
class GroupAdvantages:
    advantages: list[np.ndarray]
    """One array per group, same order and sizes as the rewards given."""
    zero_variance: list[bool]

    @property
    def effective_groups(self) -> int:
        return sum(not z for z in self.zero_variance)


def group_advantages(
    rewards: Sequence[Sequence[float]],
    *,
    scale: str = "std",
    clip: float | None = 5.0,
    eps: float = 1e-6,
) -> GroupAdvantages:
    if scale not in ("std", "none"):
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    advs: list[np.ndarray] = []
    zero: list[bool] = []
    for r in rewards:
        x = np.asarray(r, dtype=np.float64)
        if x.size == 0:
            raise ValueError("a group needs at least one reward")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"rewards must be finite, got {x.tolist()}")
        a = x - x.mean()
        flat = not informative(x)
        if flat:
            a = np.zeros_like(x)
        elif scale == "std":
            a = a / (x.std() + eps)
        if clip is not None:
            a = np.clip(a, -clip, clip)
        advs.append(a)
        zero.append(flat)
    return GroupAdvantages(advs, zero)


@dataclass(frozen=True)
class Sample:
    """One completion ready for the loss: prompt and completion token ids, the behaviour
    policy's logprob of each completion token, the completion's advantage and its group (the
    prompt it answers; prompt-mean weighs groups equally)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    behaviour_logprobs: list[float]
    advantage: float
    group: int = 0

    def __post_init__(self) -> None:
        if len(self.completion_ids) != len(self.behaviour_logprobs):
            raise ValueError(
                f"{len(self.completion_ids)} completion tokens but "
                f"{len(self.behaviour_logprobs)} behaviour logprobs"
            )

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)


def micro_batches(samples: Sequence[Sample], max_tokens: int) -> list[list[Sample]]:
    """Split into micro-batches whose padded size (rows x longest row) stays within max_tokens;
    samples are sorted by length so that padding is small. A sample longer than max_tokens gets
    a micro-batch of its own."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    out: list[list[Sample]] = []
    cur: list[Sample] = []
    for s in sorted(samples, key=lambda s: s.length):
        if cur and s.length * (len(cur) + 1) > max_tokens:
            out.append(cur)
            cur = []
        cur.append(s)
    if cur:
        out.append(cur)
    return out


@dataclass(frozen=True)
class LossConfig:
    eps_low: float = 0.2
    eps_high: float = 0.28
    kl_beta: float = 0.0
    temperature: float = 1.0
    loss_agg: LossAgg = "token-mean"
    bf16: bool = False
    """Forward and backward under bf16 autocast (the loss is computed in float32)."""


def loss_weights(samples: Sequence[Sample], loss_agg: str) -> list[float]:
    """w_s of each sample under the aggregation (module docstring); they sum to 1 over the
    samples' tokens, so the loss is a weighted mean of per-token losses."""
    tokens = [len(s.completion_ids) for s in samples]
    if loss_agg == "token-mean":
        total = sum(tokens)
        return [1.0 / total] * len(samples)
    if loss_agg == "seq-mean-token-sum":
        return [1.0 / len(samples)] * len(samples)
    if loss_agg == "seq-mean-token-mean":
        return [1.0 / (len(samples) * t) for t in tokens]
    if loss_agg == "prompt-mean":
        per_group: Counter[int] = Counter()
        for s, t in zip(samples, tokens, strict=True):
            per_group[s.group] += t
        return [1.0 / (len(per_group) * per_group[s.group]) for s in samples]
    raise ValueError(f"loss_agg must be one of {', '.join(LOSS_AGGS)}, got {loss_agg!r}")


def _pad(
    samples: Sequence[Sample], weights: Sequence[float], pad_id: int
) -> tuple[torch.Tensor, ...]:
    """input ids, attention mask, completion mask (on the predicted token's position), behaviour
    logprobs, advantages and loss weights laid out for next-token prediction."""
    rows, width = len(samples), max(s.length for s in samples)
    ids = torch.full((rows, width), pad_id, dtype=torch.long)
    attn = torch.zeros((rows, width), dtype=torch.long)
    cmask = torch.zeros((rows, width - 1))
    old = torch.zeros((rows, width - 1))
    adv = torch.zeros((rows, 1))
    w = torch.tensor(list(weights), dtype=torch.float32)[:, None]
    for i, s in enumerate(samples):
        seq = s.prompt_ids + s.completion_ids
        ids[i, : len(seq)] = torch.tensor(seq)
        attn[i, : len(seq)] = 1
        p, c = len(s.prompt_ids), len(s.completion_ids)
        # the logit at position t predicts token t + 1
        cmask[i, p - 1 : p - 1 + c] = 1
        old[i, p - 1 : p - 1 + c] = torch.tensor(s.behaviour_logprobs)
        adv[i, 0] = s.advantage
    return ids, attn, cmask, old, adv, w


def token_logprobs(
    model: torch.nn.Module, ids: torch.Tensor, attn: torch.Tensor, temperature: float
) -> torch.Tensor:
    """log p(token t+1 | tokens <= t) under softmax(logits / T), shape (rows, width - 1)."""
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def clipped_loss_sum(
    new: torch.Tensor,
    old: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    cfg: LossConfig,
    ref: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over masked tokens of the clipped surrogate (+ beta * k3), each row's tokens times
    its weight (rows, 1) when given. Also returns unweighted token sums for the step's
    statistics."""
    ratio = torch.exp(new - old)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1 - cfg.eps_low, 1 + cfg.eps_high)
    per_token = torch.maximum(pg1, pg2)
    stats = {
        "clipped_tokens": float(((pg2 > pg1) * mask).sum()),
        "ratio_sum": float((ratio.detach() * mask).sum()),
        "behaviour_kl_sum": float(((old - new.detach()) * mask).sum()),
    }
    if cfg.kl_beta > 0:
        if ref is None:
            raise ValueError("kl_beta > 0 needs reference logprobs")
        d = ref - new
        k3 = torch.exp(d) - d - 1
        per_token = per_token + cfg.kl_beta * k3
        stats["ref_kl_sum"] = float((k3.detach() * mask).sum())
    if weights is not None:
        mask = mask * weights
    return (per_token * mask).sum(), stats


@dataclass
class StepResult:
    loss: float
    grad_norm: float
    tokens: int
    sequences: int
    micro_batches: int
    clip_fraction: float
    mean_ratio: float
    behaviour_kl: float
    ref_kl: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: Sequence[Sample],
    cfg: LossConfig,
    *,
    max_tokens: int = 8192,
    max_grad_norm: float = 1.0,
    pad_id: int = 0,
    reference: torch.nn.Module | None = None,
) -> StepResult | None:
    """One optimiser step on the samples (None when there is nothing to learn from)."""
    kept = [s for s in samples if s.completion_ids and s.advantage != 0.0]
    if not kept:
        return None
    total = sum(len(s.completion_ids) for s in kept)
    weight = dict(zip(map(id, kept), loss_weights(kept, cfg.loss_agg), strict=True))
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    agg = {"clipped_tokens": 0.0, "ratio_sum": 0.0, "behaviour_kl_sum": 0.0, "ref_kl_sum": 0.0}
    batches = micro_batches(kept, max_tokens)
    dev = next(model.parameters()).device
    for mb in batches:
        ids, attn, cmask, old, adv, w = (
            t.to(dev) for t in _pad(mb, [weight[id(x)] for x in mb], pad_id)
        )
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
            new = token_logprobs(model, ids, attn, cfg.temperature)
            ref = None
            if cfg.kl_beta > 0 and reference is not None:
                with torch.no_grad():
                    ref = token_logprobs(reference, ids, attn, cfg.temperature)
        s, st = clipped_loss_sum(new, old, adv, cmask, cfg, ref, w)
        s.backward()
        loss_sum += float(s.detach())
        for k, v in st.items():
            agg[k] += v
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    grad_norm = float(norm)
    return StepResult(
        loss=loss_sum,
        grad_norm=grad_norm if math.isfinite(grad_norm) else float("nan"),
        tokens=total,
        sequences=len(kept),
        micro_batches=len(batches),
        clip_fraction=agg["clipped_tokens"] / total,
        mean_ratio=agg["ratio_sum"] / total,
        behaviour_kl=agg["behaviour_kl_sum"] / total,
        ref_kl=agg["ref_kl_sum"] / total,
    )
