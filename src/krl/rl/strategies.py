"""Each strategy as the allocator arguments it asks with (one code path for all of them, so
histories are recorded the same way): uniform is the allocator's mode uniform."""

from __future__ import annotations

import enum


class Strategy(enum.StrEnum):
    """Every strategy, the one list the trainer's settings, the simulator and the experiments
    use. Members are strings: `Strategy.UNIFORM == "uniform"`."""

    UNIFORM = "uniform"
    KNAPSACK_EB = "knapsack-eb"
    KNAPSACK_PAPER = "knapsack-paper"
    DAPO = "dapo"
    KNAPSACK_DAPO = "knapsack-dapo"
    KNAPSACK_PROBE = "knapsack-probe"


STRATEGIES: tuple[str, ...] = tuple(s.value for s in Strategy)

DYNAMIC = frozenset({Strategy.DAPO, Strategy.KNAPSACK_DAPO})
"""Strategies that drop zero-variance groups and refill from the next prompts (dynamic.py)."""


SOLVED: dict[Strategy, dict | None] = {
    Strategy.UNIFORM: None,
    Strategy.DAPO: None,
    Strategy.KNAPSACK_EB: {"mode": "eb"},
    Strategy.KNAPSACK_DAPO: {"mode": "eb"},
    Strategy.KNAPSACK_PAPER: {"mode": "paper", "fallback": True},
    Strategy.KNAPSACK_PROBE: {"mode": "eb"},
}
"""Each strategy's solve (mode and options, between the run's min_n and max_n); None: the
budget split evenly (the allocator's mode uniform). knapsack-probe's is its
second solve, after a uniform probe (PROBED)."""

PROBED = frozenset({Strategy.KNAPSACK_PROBE})
"""Strategies that give every prompt a uniform probe of probe_n rollouts, report it, then
allocate the whole budget again over the same prompts with n >= probe_n, so that even a prompt
seen for the first time is allocated from evidence (its probe)."""


def default_probe(rollouts_per_prompt: int) -> int:
    """knapsack-probe's probe per prompt when none is set: half the budget per prompt."""
    return max(1, rollouts_per_prompt // 2)


def parse_strategy(name: str) -> Strategy:
    try:
        return Strategy(name)
    except ValueError:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}") from None


def strategy_args(strategy: str, budget: int, prompts: int, min_n: int, max_n: int) -> dict:
    solve = SOLVED[parse_strategy(strategy)]
    if solve is None:
        return {"mode": "uniform", "min_n": budget // prompts, "max_n": -(-budget // prompts)}
    return {**solve, "min_n": min_n, "max_n": max_n}


def solve_kw(objective: str | None, visit_half_life: float | None) -> dict:
    """The Allocate arguments a run sets for its knapsack solves (StepRounds.solve_kw): only the
    ones given, so the allocator's defaults (the objective made for the declared loss, its
    visit half-life) show through."""
    out: dict = {}
    if objective is not None:
        out["objective"] = objective
    if visit_half_life is not None:
        out["visit_half_life"] = visit_half_life
    return out
