"""Prompt populations and the learning model of the simulator (pure numpy).

Difficulty: each prompt has a latent logit d_i drawn so that sigmoid(d_i) follows the chosen
distribution (`beta:A,B`, `levels:p1,p2,...`, `fixed:P`). Held-out prompts are drawn from the
same distribution.

Learning model ("grpo-logit"): prompt i's success probability is
    p_i = sigmoid(theta + d_i + u_i)
with one shared skill theta (moves held-out prompts too) and one per-prompt term u_i
(memorisation; moves only prompt i). A step's update is SGD along the exact expected GRPO
gradient of this model given the sampled groups: for a group of n_i rollouts with k_i successes
(p^ = k_i/n_i) the std-normalised advantages give
    sum_j A_j d log pi(y_j)/dz = n_i p^(1-p^) / sqrt(p^(1-p^)) = n_i sqrt(p^(1-p^)),
zero for a group without variance. The loss aggregation sets the divisor:
  `constant`   (Dr. GRPO): a fixed divisor, the step's rollout budget B: g_i = n_i s_i / B
  `token-mean` (our trainer, DAPO): the rollouts trained on:           g_i = n_i s_i / sum_T n_j
  `group-mean` (the original GRPO): groups averaged, each weight 1/M:   g_i = s_i / M
with s_i = sqrt(p^(1-p^)) and T the trained groups. Then plain SGD:
    theta += lr_shared * sum_i g_i          u_i += lr_own * M * g_i
Nothing else moves. `constant` is the additive model the paper's objective assumes (each
informative rollout adds learning); under `token-mean` a step moves about as far whatever share
of its groups carried signal, and this noise-free model cannot show the lower variance of a step
with more informative groups. This is a model, not a measurement: which conclusions depend on it is said
in docs/SIMULATOR.md (the effective-rollout ratio of a fixed population does not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

LossAgg = Literal["constant", "token-mean", "group-mean"]
LOSS_AGGS: tuple[str, ...] = ("constant", "token-mean", "group-mean")


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class Difficulty:
    """A distribution of initial success probabilities, parsed from a spec string."""

    kind: str
    params: tuple[float, ...]

    @classmethod
    def parse(cls, spec: str) -> Difficulty:
        kind, _, arg = spec.partition(":")
        try:
            params = tuple(float(x) for x in arg.split(",")) if arg else ()
        except ValueError:
            raise ValueError(f"difficulty {spec!r}: parameters must be numbers") from None
        if kind == "beta":
            if len(params) != 2 or min(params) <= 0:
                raise ValueError(f"difficulty {spec!r}: use beta:A,B with A, B > 0")
        elif kind in ("levels", "fixed"):
            if not params or (kind == "fixed" and len(params) != 1):
                raise ValueError(f"difficulty {spec!r}: use levels:P1,P2,... or fixed:P")
            if not all(0.0 <= p <= 1.0 for p in params):
                raise ValueError(f"difficulty {spec!r}: probabilities must lie in [0, 1]")
        else:
            raise ValueError(
                f"unknown difficulty {spec!r}: use beta:A,B, levels:P1,P2,... or fixed:P"
            )
        return cls(kind, params)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.kind == "beta":
            return rng.beta(self.params[0], self.params[1], size)
        if self.kind == "fixed":
            return np.full(size, self.params[0])
        return np.asarray(self.params)[np.arange(size) % len(self.params)]

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(f'{p:g}' for p in self.params)}"


@dataclass(frozen=True)
class LearningModel:
    lr_shared: float = 0.02
    """Step size of the shared skill (what moves held-out accuracy)."""
    lr_own: float = 0.05
    """Step size of a prompt's own term (times M, so one group moves it about this much)."""
    loss_agg: LossAgg = "constant"

    @property
    def static(self) -> bool:
        return self.lr_shared == 0 and self.lr_own == 0


@dataclass
class Population:
    d: np.ndarray
    """Latent logits of the training prompts."""
    heldout_d: np.ndarray
    learning: LearningModel = field(default_factory=LearningModel)
    theta: float = 0.0
    u: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.u is None:
            self.u = np.zeros_like(self.d)

    @classmethod
    def draw(
        cls,
        difficulty: Difficulty,
        prompts: int,
        heldout: int,
        seed: int,
        learning: LearningModel | None = None,
    ) -> Population:
        rng = np.random.default_rng([seed, 7])
        return cls(
            logit(difficulty.sample(rng, prompts)),
            logit(difficulty.sample(rng, heldout)),
            learning or LearningModel(),
        )

    def p(self, idx: np.ndarray | None = None) -> np.ndarray:
        if idx is None:
            return sigmoid(self.theta + self.d + self.u)
        return sigmoid(self.theta + self.d[idx] + self.u[idx])

    def heldout_accuracy(self) -> float:
        """Expected held-out accuracy (mean success probability; no sampling noise)."""
        return float(sigmoid(self.theta + self.heldout_d).mean())

    def update(
        self, idx: np.ndarray, n: np.ndarray, k: np.ndarray, trained: np.ndarray, budget: int
    ) -> None:
        """One SGD step on the groups marked `trained` (see the module docstring); `budget` is
        the step's rollout budget B (the `constant` divisor), M the number of groups."""
        lm = self.learning
        if lm.static or not trained.any():
            return
        n = n.astype(np.float64)
        phat = np.where(n > 0, k / np.maximum(n, 1), 0.0)
        s = np.sqrt(phat * (1 - phat)) * trained
        m = len(idx)
        if lm.loss_agg == "constant":
            g = n * s / budget
        elif lm.loss_agg == "token-mean":
            g = n * s / float((n * trained).sum())
        else:
            g = s / m
        self.theta += lm.lr_shared * float(g.sum())
        np.add.at(self.u, idx, lm.lr_own * m * g)


def expected_effective_ratio(p: np.ndarray, n: np.ndarray | int) -> float:
    """Closed form: expected share of rollouts in groups with both outcomes when prompt i gets
    n_i rollouts, sum_i n_i (1 - p_i^n_i - (1-p_i)^n_i) / sum_i n_i."""
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), np.shape(p))
    mixed = 1.0 - p**n - (1.0 - p) ** n
    return float((n * mixed).sum() / n.sum())
