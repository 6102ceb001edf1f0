"""Value models of giving a prompt N rollouts (Knapsack RL, arXiv 2509.25849, and beyond).

Paper (point estimate p):
    Value(N, p) = (1 - p^N - (1-p)^N) * p (1-p)^2
    gain(N)     = Value(N+1, p) - Value(N, p) = p^(N+1) (1-p)^3 + p^2 (1-p)^(N+2)
Bayes (p ~ Beta(a, b)), with E[p^x (1-p)^y] = B(a+x, b+y) / B(a, b):
    E[Value(N)] = E[p(1-p)^2] - E[p^(N+1) (1-p)^2] - E[p (1-p)^(N+2)]
    E[gain(N)]  = E[p^(N+1) (1-p)^3] + E[p^2 (1-p)^(N+2)]
Both gain sequences are positive and strictly decreasing in N (each term is), so the values are
concave in N and a marginal-gain greedy is exact. Gain rows are built with running products of
the exact term ratios, so a row costs one log-Beta evaluation, not one per N.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln


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


def beta_moment(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """E[p^x (1-p)^y] for p ~ Beta(a, b), in log space."""
    return np.exp(betaln(a + x, b + y) - betaln(a, b))


def bayes_value(n: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """E[Value(N, p)] under Beta(a, b)."""
    n = np.asarray(n, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    base = beta_moment(a, b, 1.0, 2.0)
    return base - beta_moment(a, b, n + 1.0, 2.0) - beta_moment(a, b, 1.0, n + 2.0)


def bayes_gains(a: np.ndarray, b: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """E[gain(N)] for N = start_i .. start_i + width - 1 (shape M x width).

    T1(N) = E[p^(N+1)(1-p)^3] and T2(N) = E[p^2(1-p)^(N+2)] obey
    T1(N+1) = T1(N) (a+N+1)/(a+b+N+4) and T2(N+1) = T2(N) (b+N+2)/(a+b+N+4).
    """
    a = np.asarray(a, dtype=np.float64)[:, None]
    b = np.asarray(b, dtype=np.float64)[:, None]
    n0 = np.asarray(start, dtype=np.float64)[:, None]
    t1 = beta_moment(a, b, n0 + 1.0, 3.0)
    t2 = beta_moment(a, b, 2.0, n0 + 2.0)
    if width == 1:
        return t1 + t2
    n = n0 + np.arange(width - 1, dtype=np.float64)  # N = start .. start+width-2
    denom = a + b + n + 4.0
    r1 = np.concatenate([t1, (a + n + 1.0) / denom], axis=1)
    r2 = np.concatenate([t2, (b + n + 2.0) / denom], axis=1)
    return np.cumprod(r1, axis=1) + np.cumprod(r2, axis=1)


def paper_need(p: np.ndarray, alpha: float, min_n: int, max_n: int) -> np.ndarray:
    """Rollouts an informative prompt 'needs' (the paper's fallback rule): the N at which a
    group holds both outcomes with probability alpha, ceil(log(1-alpha)/log(max(p,1-p))),
    clipped to [min_n, max_n]."""
    q = np.maximum(p, 1.0 - p)
    need = np.ceil(np.log1p(-alpha) / np.log(q))
    return np.clip(need, min_n, max_n).astype(np.int64)
