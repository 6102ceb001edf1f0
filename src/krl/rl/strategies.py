"""Each strategy as the allocator arguments it asks with (one code path for all of them, so
histories are recorded the same way): uniform is the solve with min_n = max_n = budget / M."""

from __future__ import annotations

import enum
from collections.abc import Callable


class Strategy(enum.StrEnum):
    """Every strategy, the one list the trainer's settings, the simulator and the experiments
    use. Members are strings: `Strategy.UNIFORM == "uniform"`."""

    UNIFORM = "uniform"
    KNAPSACK_EB = "knapsack-eb"
    KNAPSACK_PAPER = "knapsack-paper"
    KNAPSACK_BAYES = "knapsack-bayes"
    DAPO = "dapo"
    KNAPSACK_DAPO = "knapsack-dapo"


STRATEGIES: tuple[str, ...] = tuple(s.value for s in Strategy)

DYNAMIC = frozenset({Strategy.DAPO, Strategy.KNAPSACK_DAPO})
"""Strategies that drop zero-variance groups and refill from the next prompts (dynamic.py)."""


def _even(budget: int, prompts: int, min_n: int, max_n: int) -> dict:
    return {"mode": "bayes", "min_n": budget // prompts, "max_n": -(-budget // prompts)}


def _solved(mode: str, **extra: object) -> Callable[[int, int, int, int], dict]:
    def args(budget: int, prompts: int, min_n: int, max_n: int) -> dict:
        return {"mode": mode, "min_n": min_n, "max_n": max_n, **extra}

    return args


ARGS: dict[Strategy, Callable[[int, int, int, int], dict]] = {
    Strategy.UNIFORM: _even,
    Strategy.DAPO: _even,
    Strategy.KNAPSACK_EB: _solved("eb"),
    Strategy.KNAPSACK_DAPO: _solved("eb"),
    Strategy.KNAPSACK_BAYES: _solved("bayes"),
    Strategy.KNAPSACK_PAPER: _solved("paper", fallback=True),
}


def parse_strategy(name: str) -> Strategy:
    try:
        return Strategy(name)
    except ValueError:
        raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}") from None


def strategy_args(strategy: str, budget: int, prompts: int, min_n: int, max_n: int) -> dict:
    return ARGS[parse_strategy(strategy)](budget, prompts, min_n, max_n)
