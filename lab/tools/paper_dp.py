"""The paper's dynamic programme, O(M * R * (max_n - min_n)): the baseline the exact solver is
checked against (tests) and timed against (`krl bench solver`). Never used to serve."""

from __future__ import annotations

import numpy as np


def dp_allocate(value_table: np.ndarray, units: int) -> tuple[np.ndarray, float]:
    """value_table[i, k] = value of giving prompt i k units above its start (k = 0..K).
    Returns (k_i, objective) maximising sum_i value_table[i, k_i] with sum_i k_i == units."""
    m, width = value_table.shape
    best = np.full(units + 1, -np.inf)
    best[0] = 0.0
    choice = np.zeros((m, units + 1), dtype=np.int32)
    for i in range(m):
        cand = np.full((width, units + 1), -np.inf)
        for k in range(min(width, units + 1)):
            cand[k, k:] = best[: units + 1 - k] + value_table[i, k]
        choice[i] = np.argmax(cand, axis=0)
        best = cand[choice[i], np.arange(units + 1)]
    if not np.isfinite(best[units]):
        raise ValueError(f"no allocation uses exactly {units} units")
    k = np.zeros(m, dtype=np.int64)
    w = units
    for i in range(m - 1, -1, -1):
        k[i] = choice[i, w]
        w -= k[i]
    return k, float(best[units])
