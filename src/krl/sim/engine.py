"""One simulated training run: the data order of the trainer (EpochSampler), the allocation of
the chosen strategy (the real allocator code for uniform and both knapsack modes; DAPO-style
dynamic sampling over uniform groups), Bernoulli rewards from the population's current success
probabilities, the outcomes reported back, and the learning model's update.

Each row is one update (for DAPO, one update may take several generation rounds), with the
same names as the trainer's metrics.jsonl where they mean the same thing, plus the closed-form
expectation of the effective-rollout ratio for the allocation given (less noisy than the draw)
and the paper's objective sum_i Value(n_i, p_i) at the true p (what both knapsack modes try to
maximise from their estimates)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from krl.allocator.solve.objectives import OBJECTIVES
from krl.allocator.solve.values import paper_value
from krl.rl.data import EpochSampler
from krl.rl.dynamic import keep_mask
from krl.rl.rows import EvalRow, Row, StepRow
from krl.rl.strategies import (
    DYNAMIC,
    PROBED,
    Strategy,
    default_probe,
    parse_strategy,
    strategy_args,
)
from krl.sim.population import Difficulty, LearningModel, Population, expected_effective_ratio

TOKENS_PER_ROLLOUT = 64  # the simulator's rollouts all cost the same


class Backend(Protocol):
    def allocate(
        self,
        namespace: str,
        step: int,
        ids: list[str],
        budget: int,
        *,
        mode: str,
        min_n: int,
        max_n: int,
        fallback: bool = True,
        visit_half_life: float | None = None,
        objective: str | None = None,
    ) -> tuple[str, np.ndarray]: ...

    def report(
        self,
        namespace: str,
        allocation_id: str,
        ids: list[str],
        k: np.ndarray,
        n: np.ndarray,
        tokens: np.ndarray,
    ) -> int: ...


@dataclass(frozen=True)
class SimConfig:
    difficulty: str = "beta:0.2,0.4"
    prompts: int = 1024
    heldout: int = 1024
    prompts_per_step: int = 64
    rollouts_per_prompt: int = 8
    min_n: int = 2
    max_n: int = 64
    steps: int = 1000
    eval_every: int = 10
    dapo_max_rounds: int = 8
    lr_shared: float = 0.02
    lr_own: float = 0.05
    loss_agg: str = "constant"
    half_life_steps: float = 0.0
    visit_half_life: float | None = None
    """knapsack-eb: evidence half-life in visits (None: the allocator's default)."""
    objective: str | None = None
    """knapsack-eb: what the allocation maximises (objectives.OBJECTIVES; None: the
    allocator's default)."""

    @property
    def budget(self) -> int:
        return self.prompts_per_step * self.rollouts_per_prompt

    def validate(self) -> None:
        Difficulty.parse(self.difficulty)
        checks = [
            (
                self.prompts >= self.prompts_per_step,
                "prompts",
                f"{self.prompts} is fewer than a batch of {self.prompts_per_step}",
            ),
            (self.prompts_per_step >= 1, "prompts_per_step", "must be >= 1"),
            (self.heldout >= 1, "heldout", "must be >= 1"),
            (self.steps >= 1, "steps", "must be >= 1"),
            (self.rollouts_per_prompt >= 1, "rollouts_per_prompt", "must be >= 1"),
            (
                0 <= self.min_n <= self.rollouts_per_prompt <= self.max_n,
                "min_n/max_n",
                f"need min_n <= rollouts_per_prompt <= max_n, got {self.min_n}, "
                f"{self.rollouts_per_prompt}, {self.max_n}",
            ),
            (self.dapo_max_rounds >= 1, "dapo_max_rounds", "must be >= 1"),
            (self.eval_every >= 0, "eval_every", "must be >= 0"),
            (self.lr_shared >= 0 and self.lr_own >= 0, "lr_shared/lr_own", "must be >= 0"),
            (
                self.loss_agg in ("constant", "token-mean", "group-mean"),
                "loss_agg",
                f"{self.loss_agg!r} is not constant, token-mean or group-mean",
            ),
            (self.half_life_steps >= 0, "half_life_steps", "must be >= 0"),
            (
                self.visit_half_life is None or self.visit_half_life >= 0,
                "visit_half_life",
                "must be >= 0",
            ),
            (
                self.objective is None or self.objective in OBJECTIVES,
                "objective",
                f"{self.objective!r} is not one of {', '.join(OBJECTIVES)}",
            ),
        ]
        for ok, name, msg in checks:
            if not ok:
                raise ValueError(f"{name}: {msg}")

    def learning(self) -> LearningModel:
        return LearningModel(self.lr_shared, self.lr_own, self.loss_agg)  # type: ignore[arg-type]


@dataclass
class RunResult:
    strategy: str
    seed: int
    namespace: str = ""
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def simulate(
    cfg: SimConfig,
    strategy: str,
    seed: int,
    backend: Backend,
    on_step: Callable[[dict], None] | None = None,
    rollout_budget: int | None = None,
) -> RunResult:
    """Run `cfg.steps` updates of one strategy, or fewer when `rollout_budget` rollouts are
    spent first (dapo's updates cost a varying number); rows as in the module docstring."""
    strategy = parse_strategy(strategy).value
    cfg.validate()
    t0 = time.perf_counter()
    pop = Population.draw(
        Difficulty.parse(cfg.difficulty), cfg.prompts, cfg.heldout, seed, cfg.learning()
    )
    ids = [f"p{i}" for i in range(cfg.prompts)]
    sampler = EpochSampler(ids, cfg.prompts_per_step, seed)
    rng = np.random.default_rng([seed, 11])
    ns = f"sim-{strategy}-{seed}-{uuid.uuid4().hex[:8]}"
    out = RunResult(strategy, seed, ns)
    steps = _dapo_steps if strategy in DYNAMIC else _allocated_steps
    total = 0
    limit = rollout_budget if rollout_budget is not None else cfg.steps * cfg.budget

    def left() -> int:
        return limit - total

    out.rows.append(_eval_row(0, 0, pop))
    gen = steps(cfg, strategy, pop, sampler, rng, backend, ns, left)
    for step, row in enumerate(gen, start=1):
        total += row["rollouts"]
        row.update(
            kind="step", step=step, rollouts_total=total, train_accuracy=float(pop.p().mean())
        )
        out.rows.append(row)
        last = step >= cfg.steps or total >= limit
        if (cfg.eval_every and step % cfg.eval_every == 0) or last:
            out.rows.append(_eval_row(step, total, pop))
        if on_step is not None:
            on_step(row)
        if last:
            break
    out.seconds = time.perf_counter() - t0
    return out


def _eval_row(step: int, total: int, pop: Population) -> EvalRow:
    return {
        "kind": "eval",
        "step": step,
        "rollouts_total": total,
        "accuracy": {"all": pop.heldout_accuracy()},
    }


def _index(pids: list[str]) -> np.ndarray:
    return np.fromiter((int(p[1:]) for p in pids), np.int64, len(pids))


def _row(n: np.ndarray, k: np.ndarray, p: np.ndarray, trained: np.ndarray) -> StepRow:
    live = n > 0
    mixed = live & (k > 0) & (k < n)
    rollouts = int(n.sum())
    return {
        "rollouts": rollouts,
        "effective_rollout_ratio": float((n * trained).sum() / rollouts) if rollouts else 0.0,
        "expected_effective_ratio": expected_effective_ratio(p[live], n[live]),
        "expected_value": float(paper_value(n, p).sum()),
        "effective_prompt_ratio": float(mixed.sum() / max(live.sum(), 1)),
        "all_correct": float((live & (k == n)).sum() / max(live.sum(), 1)),
        "all_wrong": float((live & (k == 0)).sum() / max(live.sum(), 1)),
        "max_n": int(n.max(initial=0)),
        "n_counts": {str(a): b for a, b in sorted(Counter(n.tolist()).items())},
    }


def _allocated_steps(
    cfg: SimConfig,
    strategy: str,
    pop: Population,
    sampler: EpochSampler,
    rng: np.random.Generator,
    backend: Backend,
    ns: str,
    left: Callable[[], int],
) -> Iterator[dict]:
    args = _args(cfg, strategy)
    probe = default_probe(cfg.rollouts_per_prompt) if strategy in PROBED else 0
    g = 0
    while True:
        pids = sampler.batch(g)
        g += 1
        idx = _index(pids)
        p = pop.p(idx)
        k0 = n0 = 0
        if probe:  # a uniform probe, reported, then the whole budget again with n >= probe
            m = len(pids)
            alloc_id, n0 = backend.allocate(
                ns, g, pids, probe * m, **_args(cfg, Strategy.UNIFORM, probe * m)
            )
            k0 = rng.binomial(n0, p)
            backend.report(ns, alloc_id, pids, k0, n0, n0 * TOKENS_PER_ROLLOUT)
            args = {**args, "min_n": probe}
        alloc_id, n = backend.allocate(ns, g, pids, cfg.budget, **args)
        k = rng.binomial(n - n0, p)
        more = n - n0 > 0
        if more.any():
            sel = [pid for pid, x in zip(pids, more, strict=True) if x]
            extra = (n - n0)[more]
            backend.report(ns, alloc_id, sel, k[more], extra, extra * TOKENS_PER_ROLLOUT)
        k = k + k0
        trained = (k > 0) & (k < n)
        row = _row(n, k, p, trained)
        pop.update(idx, n, k, trained, cfg.budget)
        row["rounds"] = 1
        row["epoch"] = round(g / sampler.per_epoch, 4)
        yield row


def _args(cfg: SimConfig, strategy: str, budget: int | None = None) -> dict:
    budget = cfg.budget if budget is None else budget
    args = strategy_args(strategy, budget, cfg.prompts_per_step, cfg.min_n, cfg.max_n)
    if args["mode"] == "eb" and args["min_n"] != args["max_n"]:
        args.update(visit_half_life=cfg.visit_half_life, objective=cfg.objective)
    return args


def _dapo_steps(
    cfg: SimConfig,
    strategy: str,
    pop: Population,
    sampler: EpochSampler,
    rng: np.random.Generator,
    backend: Backend,
    ns: str,
    left: Callable[[], int],
) -> Iterator[dict]:
    """Groups round after round, until M informative groups are kept, max rounds, or the
    rollout budget is spent. `dapo` gives every prompt the uniform n and needs no allocator;
    `knapsack-dapo` allocates each round like knapsack-eb and reports it."""
    m, n0 = cfg.prompts_per_step, cfg.rollouts_per_prompt
    args = _args(cfg, strategy) if strategy != "dapo" else None
    g = 0
    while True:
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        kept = 0
        for _ in range(cfg.dapo_max_rounds):
            pids = sampler.batch(g)
            idx = _index(pids)
            g += 1
            if args is None:
                n = np.full(m, n0, dtype=np.int64)
            else:
                alloc_id, n = backend.allocate(ns, g, pids, cfg.budget, **args)
            p = pop.p(idx)
            k = rng.binomial(n, p)
            if args is not None:
                backend.report(ns, alloc_id, pids, k, n, n * TOKENS_PER_ROLLOUT)
            # Bernoulli rewards: a group's rewards differ exactly when 0 < k < n
            keep = np.array(keep_mask(((k > 0) & (k < n)).tolist(), m - kept))
            kept += int(keep.sum())
            parts.append((idx, n, k, keep))
            if kept >= m or sum(int(x[1].sum()) for x in parts) >= left():
                break
        idx, n, k, keep = (np.concatenate(x) for x in zip(*parts, strict=True))
        row = _row(n, k, pop.p(idx), keep)
        row["rounds"] = len(parts)
        row["epoch"] = round(g / sampler.per_epoch, 4)
        row["dropped_informative"] = int(((k > 0) & (k < n) & ~keep).sum())
        pop.update(idx[keep], n[keep], k[keep], np.ones(int(keep.sum()), bool), cfg.budget)
        yield row
