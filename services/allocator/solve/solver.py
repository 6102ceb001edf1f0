"""Allocation of a step's rollout budget over a batch of prompts, exactly.

Pure functions over numpy arrays; no I/O. `solve` validates the problem (raising
InvalidArgument naming the field) and dispatches on the mode:
- paper:  p = last visit's successes/trials, maximise sum Value(N_i, p_i), with the paper's
          fallback for p in {0, 1}; prompts with no history get the uniform share.
- eb:     a posterior per prompt on a grid of p under the namespace's fitted grid prior
          (grid.py), maximise sum E[u(p_i)(1 - p_i^N - (1-p_i)^N)] for the chosen objective u.
- uniform: budget / M each (the first budget mod M prompts one more): no solve; p is the mean
          of the Beta summary of the prompt's evidence (alpha, beta).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from krl.allocator.solve import grid, objectives, selection, values
from krl.common.errors import InvalidArgument, check


class Mode(enum.StrEnum):
    PAPER = "paper"
    EB = "eb"
    UNIFORM = "uniform"


@dataclass(frozen=True)
class Problem:
    budget: int
    min_n: int
    max_n: int
    mode: Mode = Mode.EB
    fallback: bool = True
    fallback_alpha: float = 0.9
    """Paper fallback: an informative prompt needs the N at which P(both outcomes) >= alpha."""
    objective: str = objectives.DEFAULT
    """eb: one of objectives.OBJECTIVES."""


@dataclass
class Batch:
    """What the solver knows of each prompt of the batch (arrays of equal length M).

    paper uses last_successes/last_trials; eb its weights; uniform reports alpha / (alpha +
    beta), the mean of a Beta summary of the same evidence."""

    last_successes: np.ndarray
    last_trials: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    weights: np.ndarray | None = None
    """eb: each prompt's posterior over grid.GRID (M x grid points, rows sum to 1)."""

    def __len__(self) -> int:
        return int(self.last_trials.size)


@dataclass
class Solution:
    n: np.ndarray
    """Rollouts per prompt, in batch order."""
    p: np.ndarray
    """The success probability the mode used (point estimate or posterior mean; NaN: none)."""
    value: np.ndarray
    """The mode's value of each prompt's n."""
    objective: float
    budget_used: int
    gap_bound: float = 0.0
    info: dict[str, float] = field(default_factory=dict)


def validate(problem: Problem, m: int) -> None:
    """Raise InvalidArgument (naming the field) for a problem with no valid allocation."""
    check(m > 0, "prompt_ids", "the batch is empty")
    check(problem.min_n >= 0, "min_n", f"must be >= 0, got {problem.min_n}")
    check(problem.max_n >= 1, "max_n", f"must be >= 1, got {problem.max_n}")
    check(
        problem.min_n <= problem.max_n,
        "min_n",
        f"min_n ({problem.min_n}) is greater than max_n ({problem.max_n})",
    )
    check(0 < problem.fallback_alpha < 1, "fallback_alpha", "must lie in (0, 1)")
    check(
        problem.objective in objectives.OBJECTIVES,
        "objective",
        f"{problem.objective!r} is not one of {', '.join(objectives.OBJECTIVES)}",
    )
    lo, hi = m * problem.min_n, m * problem.max_n
    check(
        lo <= problem.budget <= hi,
        "budget",
        f"{problem.budget} is outside [{lo}, {hi}] = [M*min_n, M*max_n] for M={m}, "
        f"min_n={problem.min_n}, max_n={problem.max_n}",
    )


def solve(problem: Problem, batch: Batch) -> Solution:
    validate(problem, len(batch))
    if problem.mode is Mode.PAPER:
        return solve_paper(problem, batch)
    if problem.mode is Mode.EB:
        return solve_eb(problem, batch)
    if problem.mode is Mode.UNIFORM:
        return solve_uniform(problem, batch)
    raise InvalidArgument(f"unknown mode {problem.mode!r}", field="mode")


def solve_uniform(problem: Problem, batch: Batch) -> Solution:
    """budget // M rollouts each and one more for the first budget % M prompts (validate has
    checked that the budget lies in [M min_n, M max_n], so every n does too)."""
    m = len(batch)
    n = np.full(m, problem.budget // m, dtype=np.int64)
    n[: problem.budget % m] += 1
    p = batch.alpha / (batch.alpha + batch.beta)
    return Solution(n, p, np.zeros(m), 0.0, int(n.sum()))


def solve_eb(problem: Problem, batch: Batch) -> Solution:
    """Exact for the concave envelope of the objective (objectives.py): the gain rows are
    W @ G, G the envelope's marginal gains on the grid, each row a positive mixture of
    non-increasing sequences. All rows start at min_n and top_units widens the rows it asks
    for together, so every call shares one column offset. gap_bound certifies the distance
    to the best allocation for the objective itself (0 for the concave objectives)."""
    m = len(batch)
    w = batch.weights if batch.weights is not None else np.tile(grid.FLAT, (m, 1))
    table, hull = objectives.envelope(problem.objective, problem.min_n, problem.max_n)
    n = np.full(m, problem.min_n, dtype=np.int64)
    units = problem.budget - int(n.sum())

    def gains(rows: np.ndarray, off: np.ndarray, width: int) -> np.ndarray:
        starts = np.unique(off)
        if starts.size == 1:  # always, as top_units calls it; a contiguous slice is 30x faster
            cols = np.ascontiguousarray(table[:, int(starts[0]) :][:, :width])
            return (w if rows.size == len(w) else w[rows]) @ cols
        out = np.empty((rows.size, width))
        for start in starts:
            sel = off == start
            lo = int(start)
            out[sel] = w[rows[sel]] @ np.ascontiguousarray(table[:, lo : lo + width])
        return out

    concentrate = problem.objective not in objectives.CONCAVE
    counts, t = selection.top_units(
        gains, np.full(m, problem.max_n - problem.min_n), units, concentrate=concentrate
    )
    n += counts
    selection.spread_evenly(n, np.full(m, problem.max_n), units - int(counts.sum()), n >= 0)
    v = objectives.expected(w, n, objectives.value_table(problem.objective, problem.max_n))
    gap = 0.0
    if concentrate:
        gap = max(float(objectives.expected(w, n, hull, problem.min_n).sum() - v.sum()), 0.0)
    p = w @ grid.GRID
    info = {"threshold": t, "gap_bound_relative": gap / float(v.sum()) if v.sum() > 0 else 0.0}
    return Solution(n, p, v, float(v.sum()), int(n.sum()), gap, info)


def solve_paper(problem: Problem, batch: Batch) -> Solution:
    m = len(batch)
    lt = batch.last_trials.astype(np.float64)
    visited = lt > 0
    p = np.full(m, np.nan)
    p[visited] = batch.last_successes[visited] / lt[visited]
    informative = visited & (p > 0) & (p < 1)
    zero = visited & (p == 0)
    cap = np.full(m, problem.max_n, dtype=np.int64)
    share = int(np.clip(problem.budget // m, problem.min_n, problem.max_n))
    n = np.where(visited, problem.min_n, share).astype(np.int64)
    left = problem.budget - int(n.sum())
    info: dict[str, float] = {"fallback_units": 0.0}
    if problem.fallback and left > 0:
        need = values.paper_need(
            p[informative], problem.fallback_alpha, problem.min_n, problem.max_n
        )
        surplus = left if not informative.any() else left - int((need - problem.min_n).sum())
        if surplus > 0:  # the informative prompts are covered: the rest goes to p = 0 first
            pool = zero if zero.any() else visited & ~informative  # else p = 1; never unvisited
            given = surplus - selection.spread_evenly(n, cap, surplus, pool)
            info["fallback_units"] = float(given)
            left -= given
    pi = np.where(informative, p, 0.0)
    counts, t = selection.top_units(
        lambda rows, off, w: values.paper_gains(pi[rows], n[rows] + off, w), cap - n, left
    )
    n += counts
    left -= int(counts.sum())
    selection.spread_evenly(n, cap, left, n >= 0)  # zero-value units, evenly
    v = values.paper_value(n, np.where(informative, p, 0.0))
    info["threshold"] = t
    return Solution(n, p, v, float(v.sum()), int(n.sum()), info=info)
