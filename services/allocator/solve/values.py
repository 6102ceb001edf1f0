"""Value models of giving a prompt N rollouts (Knapsack RL, arXiv 2509.25849, and beyond).

Paper (point estimate p):
    Value(N, p) = (1 - p^N - (1-p)^N) * p (1-p)^2
    gain(N)     = Value(N+1, p) - Value(N, p) = p^(N+1) (1-p)^3 + p^2 (1-p)^(N+2)
The gain sequence is positive and strictly decreasing in N (each term is), so the value is
concave in N and a marginal-gain greedy is exact. Gain rows are built with running products of
the exact term ratios.
"""

from __future__ import annotations

import numpy as np


def paper_value(n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Value(N, p); zero where p is 0, 1 or NaN (no history)."""
    n = np.asarray(n, dtype=np.float64)
    p = np.nan_to_num(np.asarray(p, dtype=np.float64), nan=0.0)
    q = 1.0 - p
    return (1.0 - p**n - q**n) * p * q * q


def paper_gains(p: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """gain(N) for N = start_i .. start_i + width - 1, one row per prompt (shape M x width)."""
    p = np.nan_to_num(np.asarray(p, dtype=np.float64), nan=0.0)
    q = 1.0 - p
    n0 = np.asarray(start, dtype=np.float64)
    first1 = p ** (n0 + 1.0) * q**3
    first2 = p * p * q ** (n0 + 2.0)
    return _running_product(first1, p, width) + _running_product(first2, q, width)


def _running_product(first: np.ndarray, ratio: np.ndarray, width: int) -> np.ndarray:
    """Rows first_i * ratio_i^k for k = 0..width-1."""
    out = np.empty((first.size, width))
    out[:, 0] = first
    out[:, 1:] = ratio[:, None]
    return np.cumprod(out, axis=1, out=out)


def paper_need(p: np.ndarray, alpha: float, min_n: int, max_n: int) -> np.ndarray:
    """Rollouts an informative prompt 'needs' (the paper's fallback rule): the N at which a
    group holds both outcomes with probability alpha, ceil(log(1-alpha)/log(max(p,1-p))),
    clipped to [min_n, max_n]."""
    q = np.maximum(p, 1.0 - p)
    need = np.ceil(np.log1p(-alpha) / np.log(q))
    return np.clip(need, min_n, max_n).astype(np.int64)
