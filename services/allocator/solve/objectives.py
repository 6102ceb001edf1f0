"""What mode eb maximises: the value F(p, N) of giving a prompt of success probability p N
rollouts, tabulated on grid.GRID, and the concave envelope the exact solver works on (pure).

Objectives (F for a prompt of success probability p, q = 1 - p, K ~ Binomial(N, p); each kept
by a measurement of held-out accuracy, docs/RESULTS.md):
- `group-gradient` E[sqrt(K (N - K))] / N = E[sigma^]: the magnitude of the group's GRPO
                 gradient with std-normalised advantages (sum_j A_j (y_j - p) = N sigma^ =
                 sqrt(K (N - K))) averaged within the group, for a loss that averages groups
                 (prompt-mean): there a group weighs the same whatever its n, so more rollouts
                 only make its sign and size surer;
- `sqrt-gradient` E[sqrt(K (N - K))] / sqrt(N) = sqrt(N) E[sigma^]: the group's gradient
                 signal against its sampling noise (which grows as sqrt(N)), for token-mean
                 losses, where a prompt's weight grows with its n: more rollouts on a prompt pay
                 with diminishing returns, so a step still sees many prompts;
- `paper`        p q^2 (1 - p^N - q^N): the paper's InfoGain times P(the group is informative).

`paper` is concave in N from N = 0 (grid.py). The gradient objectives are not: for a hard
prompt the first success has to be found before rollouts pay, so F is convex in N at
small N p. The solver therefore maximises sum_i E_i[H(p, n_i)], where H(p, .) is the least
concave majorant of F(p, .) on {min_n, ..., max_n} for each grid point. A positive mixture of
concave sequences is concave, so the marginal-gain greedy is exact for it, and since H >= F,
    OPT(F) <= OPT(H) = sum_i E_i[H(n_i)]
so  gap = sum_i E_i[H(n_i) - F(n_i)]  certifies how far the allocation can be below the best
one for F itself (Solution.gap_bound). On a hull chord (where H is linear and above F) a
prompt is worth its chord only when it gets the whole chord, so tied units go to as few
prompts as possible (solver: concentrate) and the gap stays small. For `paper`, H = F and the gap
is 0.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import gammaln

from krl.allocator.solve import grid
from krl_client.messages import OBJECTIVES as OBJECTIVES  # declared there, once
from krl_client.messages import Objective as Objective

U_WEIGHTS: dict[str, np.ndarray] = {"paper": grid.GRID * (1.0 - grid.GRID) ** 2}
"""u(p) of the objectives u(p) (1 - p^N - (1-p)^N): the paper's InfoGain p(1-p)^2."""
DEFAULT = "sqrt-gradient"
"""For a request that declares neither an objective nor its loss aggregation: the objective
measured best for the token-mean losses most trainers use (krl_client.messages.OBJECTIVE_FOR_LOSS)."""
CONCAVE = frozenset(U_WEIGHTS)


GRADIENTS = frozenset({"sqrt-gradient", "group-gradient"})
_SUMS: dict[str, np.ndarray] = {}
"""The largest table of E[sqrt(K (N - K))] computed so far (gradient_sums)."""


@functools.lru_cache(maxsize=16)
def value_table(objective: str, max_n: int) -> np.ndarray:
    """F[j, N] for grid point j and N = 0..max_n (shape GRID_POINTS x (max_n + 1))."""
    n = np.arange(max_n + 1, dtype=np.float64)
    if objective in U_WEIGHTS:
        table = grid.value_table(U_WEIGHTS[objective], max_n)
    elif objective in GRADIENTS:
        table = gradient_sums(max_n).copy()
        if objective == "group-gradient":
            table[:, 1:] /= n[None, 1:]
        elif objective == "sqrt-gradient":
            table[:, 1:] /= np.sqrt(n[None, 1:])
    else:
        raise KeyError(objective)
    table.setflags(write=False)
    return table


def gradient_sums(max_n: int) -> np.ndarray:
    """E[sqrt(K (N - K))], K ~ Binomial(N, p_j), for N = 0..max_n (GRID_POINTS x (max_n + 1)):
    a slice of the largest table computed so far, which is computed for the next power of two
    (at least 64) when it is too small, so both gradient objectives and every max_n up to
    it share one computation (about 3 s at 4,096 and 0.1 s at 1,024 on one core; a table per
    max_n cost 15 s at 2,802)."""
    table = _SUMS.get("largest")
    if table is None or table.shape[1] <= max_n:
        table = _gradient_sums(_cap(max_n))
        _SUMS["largest"] = table
    return table[:, : max_n + 1]


def table_ready(objective: str, max_n: int) -> bool:
    """Whether a solve of this objective up to max_n finds its table computed (else it
    computes it first: seconds for thousands of rollouts, so off the event loop)."""
    if objective not in GRADIENTS:
        return True
    table = _SUMS.get("largest")
    return table is not None and table.shape[1] > max_n


def _cap(max_n: int) -> int:
    return max(64, 1 << (max(max_n, 1) - 1).bit_length())


def _gradient_sums(cap: int) -> np.ndarray:
    lp, lq = np.log(grid.GRID)[:, None], np.log1p(-grid.GRID)[:, None]
    log_fact = gammaln(np.arange(cap + 1, dtype=np.float64) + 1.0)
    out = np.zeros((grid.GRID_POINTS, cap + 1))
    for size in range(2, cap + 1):
        k = np.arange(size + 1)
        kf = k.astype(np.float64)
        log_pmf = (log_fact[size] - log_fact[k] - log_fact[size - k]) + kf * lp + (size - kf) * lq
        out[:, size] = np.exp(log_pmf) @ np.sqrt(kf * (size - kf))
    out.setflags(write=False)
    return out


def concave_majorant_gains(gains: np.ndarray) -> np.ndarray:
    """The increments of the least concave majorant of the sequence with these increments:
    the antitonic (non-increasing) regression of `gains` with unit weights (pool adjacent
    violators), row by row."""
    out = np.empty_like(gains, dtype=np.float64)
    for r, row in enumerate(np.atleast_2d(gains)):
        means: list[float] = []
        sizes: list[int] = []
        for g in row:
            mean, size = float(g), 1
            while means and means[-1] <= mean:
                mean = (means[-1] * sizes[-1] + mean * size) / (sizes[-1] + size)
                size += sizes.pop()
                means.pop()
            means.append(mean)
            sizes.append(size)
        out[r] = np.repeat(means, sizes)
    return out


@functools.lru_cache(maxsize=64)
def envelope(objective: str, min_n: int, max_n: int) -> tuple[np.ndarray, np.ndarray]:
    """(G, H): G[j, k] the gain of the (k+1)-th unit above min_n on the concave majorant of
    F(p_j, .) over {min_n..max_n}, for k = 0..2 (max_n - min_n) (columns past max_n - min_n
    are 0: the solver never takes them, but its widening may read them); H[j, k] = the
    majorant's value at min_n + k, k = 0..max_n - min_n."""
    f = value_table(objective, max_n)[:, min_n:]
    room = max_n - min_n
    raw = np.diff(f, axis=1)
    gains = raw if objective in CONCAVE else concave_majorant_gains(raw)
    table = np.zeros((grid.GRID_POINTS, 2 * room + 1))
    table[:, :room] = gains
    hull = np.concatenate([f[:, :1], f[:, :1] + np.cumsum(gains, axis=1)], axis=1)
    table.setflags(write=False)
    hull.setflags(write=False)
    return table, hull


def expected(w: np.ndarray, n: np.ndarray, table: np.ndarray, offset: int = 0) -> np.ndarray:
    """sum_j w[i, j] table[j, n_i - offset] for each row i of the posterior w."""
    cols = np.asarray(n, dtype=np.int64) - offset
    rows = _transposed(table)[cols]  # one contiguous row per prompt: a fast gather
    return np.einsum("ij,ij->i", w, rows)


def _transposed(table: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(table.T)


def expected_value(w: np.ndarray, n: np.ndarray, objective: str) -> np.ndarray:
    """E[F(p, n_i)] under each row's posterior."""
    n = np.asarray(n, dtype=np.int64)
    return expected(w, n, value_table(objective, int(n.max(initial=0))))
