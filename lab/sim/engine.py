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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from krl.allocator.solve.objectives import OBJECTIVES
from krl.allocator.solve.values import paper_value
from krl.rl.data import EpochSampler
from krl.rl.rows import EvalRow, Row, StepRow
from krl.rl.step import StepRounds
from krl.rl.strategies import DYNAMIC, PROBED, default_probe, parse_strategy, solve_kw
from krl.sim.population import Difficulty, LearningModel, Population, expected_effective_ratio
from krl_client.messages import Outcome
from krl_client.session import informative

TOKENS_PER_ROLLOUT = 64  # the simulator's rollouts all cost the same


class Backend(Protocol):
    def client(self, namespace: str) -> Any:
        """An allocator client of one namespace: AllocatorClient's allocate and report."""
        ...


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
    total = 0
    limit = rollout_budget if rollout_budget is not None else cfg.steps * cfg.budget
    out.rows.append(_eval_row(0, 0, pop))
    gen = _steps(cfg, strategy, pop, sampler, rng, backend.client(ns), limit)
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


@dataclass(frozen=True)
class Draws:
    """A prompt's simulated group: k successes in n Bernoulli rollouts."""

    prompt_id: str
    k: int
    n: int


class BernoulliRollouts:
    """The step's rollouts in the simulator: each prompt's n draws at its current success
    probability (the population's), every rollout TOKENS_PER_ROLLOUT tokens long."""

    def __init__(self, pop: Population, rng: np.random.Generator) -> None:
        self.pop = pop
        self.rng = rng

    def generate(self, ids: list[str], n: Mapping[str, int], seed: int) -> dict[str, Draws]:
        nn = np.fromiter((n[pid] for pid in ids), np.int64, len(ids))
        k = self.rng.binomial(nn, self.pop.p(_index(ids)))
        return {
            pid: Draws(pid, int(a), int(b)) for pid, a, b in zip(ids, k, nn, strict=True) if b > 0
        }

    def outcome(self, group: Draws) -> Outcome:
        return Outcome(group.prompt_id, group.k, group.n, group.n * TOKENS_PER_ROLLOUT)

    def informative(self, group: Draws) -> bool:
        return informative([1.0] * group.k + [0.0] * (group.n - group.k))  # its Bernoulli rewards

    def merge(self, probe: Draws, topup: Draws) -> Draws:
        return Draws(probe.prompt_id, probe.k + topup.k, probe.n + topup.n)


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


def _steps(
    cfg: SimConfig,
    strategy: str,
    pop: Population,
    sampler: EpochSampler,
    rng: np.random.Generator,
    client: Any,
    limit: int,
) -> Iterator[dict]:
    """The trainer's step (krl.rl.step) with Bernoulli rollouts; after each, the learning
    model's update: every prompt's group for the allocated strategies (a group without a
    gradient moves nothing), the kept groups for dapo."""
    rounds = StepRounds(
        client,
        BernoulliRollouts(pop, rng),
        sampler,
        strategy,
        cfg.budget,
        cfg.min_n,
        cfg.max_n,
        probe_n=default_probe(cfg.rollouts_per_prompt) if strategy in PROBED else 0,
        dapo_max_rounds=cfg.dapo_max_rounds,
        rollout_budget=limit,
        solve_kw=solve_kw(cfg.objective, cfg.visit_half_life),
    )
    dynamic = strategy in DYNAMIC
    while True:
        done, _ = rounds.step()
        cols: list[tuple[int, int, int, bool]] = []  # (index, n, k, kept) per prompt
        for r in done:
            kept = {pid: keep for pid, keep in zip(r.outcomes, r.keep, strict=True)}
            for pid in r.ids:
                o = r.outcomes.get(pid)
                cols.append(
                    (int(pid[1:]), r.plan.n[pid], o.successes if o else 0, kept.get(pid, False))
                )
        idx, n, k, keep = (np.array(c) for c in zip(*cols, strict=True))
        keep = keep.astype(bool)
        mixed = (k > 0) & (k < n)
        trained = keep & mixed
        row = _row(n, k, pop.p(idx), trained)
        if dynamic:
            row["dropped_informative"] = int((mixed & ~keep).sum())
            pop.update(idx[keep], n[keep], k[keep], np.ones(int(keep.sum()), bool), cfg.budget)
        else:
            pop.update(idx, n, k, trained, cfg.budget)
        row["rounds"] = len(done)
        row["epoch"] = round(rounds.batches / sampler.per_epoch, 4)
        yield row
