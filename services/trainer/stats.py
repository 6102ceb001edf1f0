"""What a step's groups say about exploration: the effective-rollout ratio (the share of rollouts
in groups with non-zero reward variance, i.e. rollouts that carry a GRPO gradient), the
effective-prompt ratio, and the all-correct / all-wrong shares. Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GroupOutcome:
    n: int
    successes: int


@dataclass(frozen=True)
class BatchStats:
    prompts: int
    rollouts: int
    effective_rollout_ratio: float
    effective_prompt_ratio: float
    all_correct: float
    all_wrong: float
    success_rate: float
    max_n: int
    zero_rollout_prompts: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def batch_stats(groups: Sequence[GroupOutcome]) -> BatchStats:
    """Ratios are over prompts that got at least one rollout; a group of one rollout has no
    variance, so it is never effective."""
    live = [g for g in groups if g.n > 0]
    rollouts = sum(g.n for g in live)
    mixed = [g for g in live if 0 < g.successes < g.n]
    m = len(live) or 1
    return BatchStats(
        prompts=len(live),
        rollouts=rollouts,
        effective_rollout_ratio=sum(g.n for g in mixed) / rollouts if rollouts else 0.0,
        effective_prompt_ratio=len(mixed) / m,
        all_correct=sum(g.successes == g.n for g in live) / m,
        all_wrong=sum(g.successes == 0 for g in live) / m,
        success_rate=sum(g.successes for g in live) / rollouts if rollouts else 0.0,
        max_n=max((g.n for g in live), default=0),
        zero_rollout_prompts=len(groups) - len(live),
    )


def accuracy_by_level(results: Mapping[str, bool], levels: Mapping[str, int | None]) -> dict:
    """{"all": acc, "L1": acc, ...} from per-prompt correctness and each prompt's level."""
    out: dict[str, float] = {}
    if results:
        out["all"] = sum(results.values()) / len(results)
    by: dict[int, list[bool]] = {}
    for pid, ok in results.items():
        lv = levels.get(pid)
        if lv is not None:
            by.setdefault(lv, []).append(ok)
    for lv in sorted(by):
        out[f"L{lv}"] = sum(by[lv]) / len(by[lv])
    return out
