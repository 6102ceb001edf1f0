"""Allocation of a step's rollout budget over a batch of prompts, exactly, in three modes.

Pure functions over numpy arrays; no I/O. `solve` validates the problem (raising
InvalidArgument naming the field) and dispatches on the mode:
- paper:  p = last visit's successes/trials, maximise sum Value(N_i, p_i), with the paper's
          fallback for p in {0, 1}; prompts with no history get the uniform share.
- bayes:  Beta(a_i, b_i) per prompt, maximise sum E[Value(N_i, p_i)].
- eb:     a posterior per prompt on a grid of p under the namespace's fitted grid prior
          (grid.py), maximise sum E[u(p_i)(1 - p_i^N - (1-p_i)^N)] for the chosen objective u.
- tokens: budget in tokens, cost of prompt i's rollout = its expected response length c_i;
          greedy by expected gain per token, with a certified optimality gap bound.
- uniform: budget / M each (the first budget mod M prompts one more): no solve; p is the Beta
          posterior mean.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from krl.allocator.solve import grid, objectives, selection, values
from krl.common.errors import InvalidArgument, check


class Mode(enum.StrEnum):
    PAPER = "paper"
    BAYES = "bayes"
    TOKENS = "tokens"
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

    paper uses last_successes/last_trials; bayes and tokens use alpha/beta (the posterior);
    tokens uses mean_tokens (the cost of one rollout)."""

    last_successes: np.ndarray
    last_trials: np.ndarray
    alpha: np.ndarray
    beta: np.ndarray
    mean_tokens: np.ndarray
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


def validate(problem: Problem, m: int, cost: np.ndarray | None = None) -> None:
    """Raise InvalidArgument (naming the field) for a problem with no valid allocation.
    `cost` (tokens mode) is checked only when given, so bounds can be checked before any read."""
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
    if problem.mode is not Mode.TOKENS:
        lo, hi = m * problem.min_n, m * problem.max_n
        check(
            lo <= problem.budget <= hi,
            "budget",
            f"{problem.budget} is outside [{lo}, {hi}] = [M*min_n, M*max_n] for M={m}, "
            f"min_n={problem.min_n}, max_n={problem.max_n}",
        )
        return
    check(problem.budget > 0, "budget", f"must be > 0 tokens, got {problem.budget}")
    if cost is not None:
        check(bool(np.all(np.isfinite(cost)) and np.all(cost > 0)), "mean_tokens", "must be > 0")
        low = float(cost.sum()) * problem.min_n
        check(
            problem.budget >= low,
            "budget",
            f"{problem.budget} tokens is below the {low:.0f} that min_n={problem.min_n} "
            f"rollouts of each of the {m} prompts cost",
        )


def solve(problem: Problem, batch: Batch) -> Solution:
    validate(problem, len(batch), batch.mean_tokens if problem.mode is Mode.TOKENS else None)
    if problem.mode is Mode.PAPER:
        return solve_paper(problem, batch)
    if problem.mode is Mode.BAYES:
        return solve_bayes(problem, batch)
    if problem.mode is Mode.TOKENS:
        return solve_tokens(problem, batch)
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


def solve_bayes(problem: Problem, batch: Batch) -> Solution:
    a, b = batch.alpha, batch.beta
    m = len(batch)
    n = np.full(m, problem.min_n, dtype=np.int64)
    room = np.full(m, problem.max_n - problem.min_n, dtype=np.int64)
    units = problem.budget - int(n.sum())
    counts, t = selection.top_units(
        lambda rows, off, w: values.bayes_gains(a[rows], b[rows], n[rows] + off, w), room, units
    )
    n += counts
    selection.spread_evenly(n, np.full(m, problem.max_n), units - int(counts.sum()), n >= 0)
    v = values.bayes_value(n, a, b)
    return Solution(n, a / (a + b), v, float(v.sum()), int(n.sum()), info={"threshold": t})


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


def solve_tokens(problem: Problem, batch: Batch) -> Solution:
    """Greedy by expected gain per token. The units taken before the first that does not fit
    form the prefix of the LP (fractional) optimum, so OPT <= LP = prefix value + residual *
    (gain/cost of that unit); a second pass adds any later unit that still fits, and
    gap_bound = LP - objective bounds how far the result can be below the optimum."""
    a, b, c = batch.alpha, batch.beta, batch.mean_tokens.astype(np.float64)
    m, width = len(batch), problem.max_n - problem.min_n
    n = np.full(m, problem.min_n, dtype=np.int64)
    budget = float(problem.budget)
    left = budget - float(np.dot(c, n))
    base = values.bayes_value(n, a, b)
    if width == 0:
        return Solution(n, a / (a + b), base, float(base.sum()), round(budget - left))
    g = values.bayes_gains(a, b, n, width)
    ratio = g / c[:, None]
    order = np.argsort(-ratio, axis=None, kind="stable")
    rows = order // width
    unit_cost = c[rows]
    fits = int(np.searchsorted(np.cumsum(unit_cost), left, side="right"))
    taken = np.bincount(rows[:fits], minlength=m)
    left -= float(unit_cost[:fits].sum())
    lp_bound = 0.0
    if fits < order.size:
        lp_bound = float(ratio.ravel()[order[fits]]) * left
        blocked = np.zeros(m, dtype=bool)
        cheapest = float(c.min())
        for k in range(fits, order.size):  # second pass: later units that still fit
            if left < cheapest:
                break
            r = rows[k]
            if blocked[r]:
                continue
            if c[r] <= left:
                taken[r] += 1
                left -= c[r]
            else:
                blocked[r] = True
    n += taken
    v = values.bayes_value(n, a, b)
    objective = float(v.sum())
    prefix_value = float(base.sum()) + float(g.ravel()[order[:fits]].sum())
    gap = max(prefix_value + lp_bound - objective, 0.0)
    info = {"budget_left": left, "gap_bound_relative": gap / objective if objective else 0.0}
    return Solution(n, a / (a + b), v, objective, math.ceil(budget - left), gap, info)
