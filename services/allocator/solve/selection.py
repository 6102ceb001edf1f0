"""Exact selection of units from non-increasing gain sequences (a separable concave
resource-allocation problem with one budget) and even spreading of equal-value units.

For concave items the optimum of  max sum_i V_i(n_i)  s.t.  sum_i n_i = R  is: take the R
largest marginal gains over all items. The R-th largest gain t is the Lagrange threshold;
n_i = #{gains of i > t} plus an even share of the units tied at t. Rows are built only as wide
as needed: a row is widened to its full capacity when its last computed gain still beats t
(one widening round suffices, since t only rises when elements are added)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# gain_fn(rows, offset, width) -> gains of those rows for `width` units, starting `offset`
# units above each row's start (shape len(rows) x width).
GainFn = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


def spread_evenly(n: np.ndarray, cap: np.ndarray, units: int, eligible: np.ndarray) -> int:
    """Add `units` to n (in place) over eligible rows, raising the lowest first (water-filling),
    never above cap. Returns the units that did not fit."""
    idx = np.flatnonzero(eligible & (n < cap))
    if units <= 0 or idx.size == 0:
        return max(units, 0)
    cur, top = n[idx], cap[idx]
    room = int((top - cur).sum())
    if units >= room:
        n[idx] = top
        return units - room
    lo, hi = int(cur.min()), int(top.max())  # find the largest level L with fill(L) <= units
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if int((np.clip(mid, cur, top) - cur).sum()) <= units:
            lo = mid
        else:
            hi = mid - 1
    filled = np.clip(lo, cur, top)
    left = units - int((filled - cur).sum())
    can = np.flatnonzero(filled < top)  # rows at level lo that can take one more
    filled[can[:left]] += 1
    n[idx] = filled
    return 0


def fill_in_order(n: np.ndarray, room: np.ndarray, units: int) -> int:
    """Add `units` to n (in place), filling rows whole, those with most room first (ties by
    index), never past room. Returns the units that did not fit."""
    order = np.argsort(-room, kind="stable")
    order = order[room[order] > 0]
    take = np.minimum(room[order], np.maximum(units - (np.cumsum(room[order]) - room[order]), 0))
    n[order] += take
    return units - int(take.sum())


def top_units(
    gain_fn: GainFn, room: np.ndarray, units: int, *, concentrate: bool = False
) -> tuple[np.ndarray, float]:
    """Choose up to `units` units with positive gain, at most room[i] from row i, maximising the
    sum of chosen gains. Returns (count per row, threshold gain). Units with gain <= 0 are
    never chosen, so the counts can sum to less than `units`.

    Rows start a little wider than the average share; a row whose last computed gain still
    beats the current threshold gets twice as many more columns, until none does. The
    threshold only rises as columns are added, so the rows left alone stay settled.

    Units tied at the threshold are spread evenly over their rows, or with `concentrate` given
    whole to as few rows as possible (the rows with most tied units first): on the linear
    chord of a concave envelope a row is worth its chord only in full (objectives.py)."""
    rows = room.size
    counts = np.zeros(rows, dtype=np.int64)
    if units <= 0 or rows == 0 or int(room.max(initial=0)) == 0:
        return counts, np.inf
    full = int(room.max())
    width = min(full, max(4, 2 * -(-units // rows) + 2))
    have = np.zeros(rows, dtype=np.int64)
    blocks: list[tuple[np.ndarray, np.ndarray]] = []
    top = np.empty(0)  # the `units` largest gains so far: later thresholds are among these
    todo = np.flatnonzero(room > 0)
    while todo.size:
        g = _masked(gain_fn(todo, have[todo], width), room[todo], have[todo])
        blocks.append((todo, g))
        have[todo] += width
        t, top = _kth_largest(np.concatenate([top, g.ravel()]), units)
        last = g[:, -1]
        beats = (last >= t) if concentrate else (last > t)  # a chord tied at t, whole
        todo = todo[(room[todo] > have[todo]) & beats & (last > 0)]
        width = min(2 * width, full)
    tied = np.zeros(rows, dtype=np.int64)
    for idx, g in blocks:
        counts[idx] += (g > t).sum(axis=1)
        if np.isfinite(t):
            tied[idx] += (g == t).sum(axis=1)
    extra = units - int(counts.sum())
    if extra > 0 and tied.any():
        if concentrate:
            fill_in_order(counts, tied, extra)
        else:
            spread_evenly(counts, counts + tied, extra, tied > 0)
    return counts, float(t)


def _masked(g: np.ndarray, room: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Gains beyond a row's room, and non-positive or NaN gains, become -inf (never chosen)."""
    g[~(g > 0)] = -np.inf
    over = np.flatnonzero(offset + g.shape[1] > room)  # only these rows reach past their room
    if over.size:
        col = offset[over, None] + np.arange(g.shape[1])
        sub = g[over]
        sub[col >= room[over, None]] = -np.inf
        g[over] = sub
    return g


def _kth_largest(values: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """The k-th largest of `values` (-inf when there are fewer than k) and the k largest
    (all of them when there are fewer): the k-th largest of these and any later values is the
    k-th largest of everything, so the rest need not be kept."""
    if k > values.size:
        return -np.inf, values
    part = np.partition(values, values.size - k)
    return float(part[values.size - k]), part[values.size - k :]
