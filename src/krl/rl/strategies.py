"""Each strategy as the allocator arguments it asks with (one code path for all of them, so
histories are recorded the same way): uniform is the solve with min_n = max_n = budget / M."""

from __future__ import annotations

from typing import Literal, get_args

Strategy = Literal[
    "uniform", "knapsack-eb", "knapsack-paper", "knapsack-bayes", "dapo", "knapsack-dapo"
]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
"""Every strategy, the one list the trainer's settings, the simulator and the experiments use."""

DYNAMIC = frozenset({"dapo", "knapsack-dapo"})
"""Strategies that drop zero-variance groups and refill from the next prompts (dynamic.py)."""


def strategy_args(strategy: str, budget: int, prompts: int, min_n: int, max_n: int) -> dict:
    if strategy in ("knapsack-eb", "knapsack-dapo"):
        return {"mode": "eb", "min_n": min_n, "max_n": max_n}
    if strategy == "knapsack-bayes":
        return {"mode": "bayes", "min_n": min_n, "max_n": max_n}
    if strategy == "knapsack-paper":
        return {"mode": "paper", "min_n": min_n, "max_n": max_n, "fallback": True}
    if strategy in ("uniform", "dapo"):
        lo, hi = budget // prompts, -(-budget // prompts)
        return {"mode": "bayes", "min_n": lo, "max_n": hi}
    raise ValueError(f"unknown strategy {strategy!r}")
