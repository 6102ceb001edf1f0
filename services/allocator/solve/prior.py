"""The namespace-wide Beta prior, fitted by the method of moments of a beta-binomial to
per-prompt success rates, correcting for the binomial noise of few trials. A diagnostic in the
summaries (no mode allocates with it) and the calibration replay's baseline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RateMoments:
    """Sufficient statistics over the prompts of a namespace that have evidence:
    count, sum of rates p_i, sum of p_i^2, sum of 1/t_i (t_i = the prompt's evidence)."""

    prompts: float = 0.0
    sum_p: float = 0.0
    sum_p2: float = 0.0
    sum_inv_t: float = 0.0

    @classmethod
    def from_counts(cls, successes: np.ndarray, trials: np.ndarray) -> RateMoments:
        t = np.asarray(trials, dtype=np.float64)
        s = np.asarray(successes, dtype=np.float64)
        seen = t > 0
        p = s[seen] / t[seen]
        return cls(
            float(seen.sum()), float(p.sum()), float((p * p).sum()), float((1 / t[seen]).sum())
        )


@dataclass(frozen=True)
class PriorConfig:
    strength_min: float = 2.0
    """Smallest prior strength a+b (weakest prior)."""
    strength_max: float = 50.0
    """Largest prior strength a+b: evidence of this many trials weighs as much as the prior."""
    min_prompts: int = 8
    """Below this many prompts with evidence, use the flat prior Beta(1, 1)."""


def fit_prior(m: RateMoments, cfg: PriorConfig = PriorConfig()) -> tuple[float, float]:
    """(a0, b0) of the Beta prior. Mean = mean rate; strength from the between-prompt variance:
    Var(p_hat) = v + (mu(1-mu) - v) h with h = mean(1/t), so v = (Var(p_hat) - mu(1-mu) h)/(1-h)
    and a0 + b0 = mu(1-mu)/v - 1 (clipped to [strength_min, strength_max])."""
    if m.prompts < cfg.min_prompts:
        return 1.0, 1.0
    mu = float(np.clip(m.sum_p / m.prompts, 0.02, 0.98))
    var_obs = max(m.sum_p2 / m.prompts - (m.sum_p / m.prompts) ** 2, 0.0)
    h = min(m.sum_inv_t / m.prompts, 0.95)
    between = (var_obs - mu * (1 - mu) * h) / (1 - h)
    if between <= 0:
        strength = cfg.strength_max
    else:
        strength = float(np.clip(mu * (1 - mu) / between - 1, cfg.strength_min, cfg.strength_max))
    return mu * strength, (1 - mu) * strength
