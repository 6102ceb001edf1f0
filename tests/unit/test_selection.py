import numpy as np

from krl.allocator.solve.selection import spread_evenly, top_units


def test_spread_evenly_raises_the_lowest_first_and_respects_caps():
    n = np.array([0, 5, 2, 9])
    left = spread_evenly(n, np.array([3, 10, 10, 10]), 10, np.ones(4, dtype=bool))
    assert left == 0
    assert n.tolist() == [3, 7, 7, 9]  # level 7; row 0 stops at its cap, row 3 is above it


def test_spread_evenly_reports_what_does_not_fit():
    n = np.array([1, 1])
    assert spread_evenly(n, np.array([2, 3]), 10, np.array([True, True])) == 7
    assert n.tolist() == [2, 3]


def test_top_units_picks_the_largest_gains_and_widens_rows():
    # row 0's gains decay slowly (needs widening), row 1's fast
    rates = np.array([0.99, 0.5])

    def gains(rows, offset, width):
        k = offset[:, None] + np.arange(width)
        return rates[rows, None] ** k

    counts, _ = top_units(gains, np.array([100, 100]), 60)
    all_gains = np.concatenate([rates[0] ** np.arange(100), rates[1] ** np.arange(100)])
    best = np.sort(all_gains)[::-1][:60].sum()
    got = (rates[0] ** np.arange(counts[0])).sum() + (rates[1] ** np.arange(counts[1])).sum()
    assert counts.sum() == 60 and np.isclose(got, best)
    assert counts[0] > 50
