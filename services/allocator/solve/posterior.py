"""Evidence over a batch and mode eb's posterior from it (pure): the weights of stored visits,
the policy's drift since each, the grid posterior, and the decay of evidence (a report applies
the same rule in store/record_update.py)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from krl.allocator.solve import grid
from krl.allocator.solve.prior import RateMoments


def visit_weights(
    visits: np.ndarray, step: int, visit_half_life: float, half_life_steps: float = 0.0
) -> np.ndarray:
    """Weight of each stored visit (count x K). A visit `a` visits before the prompt's newest
    weighs 2^(-a / visit_half_life) (<= 0: no decay by visits), times
    2^(-(step - its step) / half_life_steps) when that explicit step half-life is > 0; no visit
    weighs 0. The newest visit always weighs 1 by visits, so evidence survives any revisit
    interval: staleness is counted in the prompt's own visits, not in the steps of a dataset of
    unknown size."""
    live = visits[:, :, 1] > 0
    w = live.astype(np.float64)
    if visit_half_life > 0:
        newer = np.cumsum(live[:, ::-1], axis=1)[:, ::-1] - live  # live visits after this one
        w = w * np.exp2(-newer / visit_half_life)
    if half_life_steps > 0:
        age = np.maximum(step - visits[:, :, 0].astype(np.float64), 0.0)
        w = w * np.exp2(-age / half_life_steps)
    return w


def visit_drift(visits: np.ndarray, now_logit: float) -> np.ndarray:
    """How far the namespace's success-rate logit moved since each visit (count x K): the
    policy's measured drift, which a visit's evidence is shifted by (grid.visit_loglik)."""
    return now_logit - visits[:, :, 3].astype(np.float64) / 1000.0


def last_visit_drift(visits: np.ndarray, now_logit: float) -> float:
    """Mean drift since the last visit of the prompts that have one (0.0 when none has)."""
    live = visits[:, :, 1] > 0
    has = live.any(axis=1)
    if not has.any():
        return 0.0
    last = live.shape[1] - 1 - np.argmax(live[:, ::-1], axis=1)
    d = visit_drift(visits, now_logit)[np.arange(live.shape[0]), last]
    return float(d[has].mean())


def eb_posterior(
    prior: np.ndarray,
    visits: np.ndarray,
    now_logit: float | None,
    step: int,
    visit_half_life: float,
    half_life_steps: float = 0.0,
) -> np.ndarray:
    """Each prompt's posterior on grid.GRID (M x grid points) in mode eb: the namespace's grid
    prior moved by the mean drift since the last visits it was fitted to, times the likelihood
    of the prompt's visits, each weighted (visit_weights) and shifted by the drift since it was
    made (grid.visit_loglik). `now_logit` None (nothing reported yet): no drift."""
    w = visit_weights(visits, step, visit_half_life, half_life_steps)
    if now_logit is None:
        drift = np.zeros(w.shape)
    else:
        drift = visit_drift(visits, now_logit)
        prior = grid.shift_prior(prior, last_visit_drift(visits, now_logit))
    loglik = grid.visit_loglik(visits[:, :, 1], visits[:, :, 2], w, drift)
    return grid.posterior_from_loglik(prior, loglik)


def decay_factor(step: np.ndarray | float, last_step: np.ndarray | float, half_life: float):
    """Weight of evidence recorded at last_step, seen from step: 2^-((step - last)/half_life).
    half_life <= 0 means no decay; evidence is never weighted above 1."""
    if half_life <= 0:
        return np.ones_like(np.asarray(step, dtype=np.float64) - last_step)
    age = np.maximum(np.asarray(step, dtype=np.float64) - last_step, 0.0)
    return np.exp2(-age / half_life)


@dataclass
class BatchHistory:
    """Arrays over a batch, evidence decayed to the allocation's step."""

    evidence_successes: np.ndarray
    evidence_failures: np.ndarray
    last_successes: np.ndarray
    last_trials: np.ndarray
    moments: RateMoments
    visits: np.ndarray | None = None  # batch x visits kept x 4 (step, n, successes, milli-logit)
    rate_logit: float | None = None
    """Logit of the namespace's current success rate (None before any report)."""
    last_visit_pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    """The namespace's last-visit outcomes: (successes, trials, prompts with that pair)."""
