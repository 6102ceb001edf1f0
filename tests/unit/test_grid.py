"""The empirical-Bayes grid model: prior fit, posterior, expected value, staleness rules, and
the solver's exactness under it."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krl.allocator.solve import grid, objectives, posterior, solver
from krl.allocator.solve.solver import Batch, Mode, Problem
from krl.allocator.store.record import RECENT_KEPT, VISIT_FIELDS
from krl.tools import paper_dp as dp


def _nearest(p: float) -> int:
    return int(np.argmin(np.abs(grid.GRID - p)))


def test_prior_fit_recovers_a_known_mixture():
    """Half the prompts unsolvable (p ~ 0.001), 30% at 0.3, 20% at 0.8, 8 trials each: EM
    puts the mass where the mixture is, which no single Beta can."""
    rng = np.random.default_rng(0)
    p = np.concatenate([np.full(2000, 0.001), np.full(1200, 0.3), np.full(800, 0.8)])
    k = rng.binomial(8, p)
    prior = grid.fit_prior(k, np.full(k.size, 8))
    assert prior.sum() == pytest.approx(1.0)

    def mass(lo: float, hi: float) -> float:
        sel = (lo <= grid.GRID) & (hi >= grid.GRID)
        return float(prior[sel].sum())

    assert mass(0.0, 0.03) == pytest.approx(0.5, abs=0.05)
    assert mass(0.15, 0.5) == pytest.approx(0.3, abs=0.06)
    assert mass(0.6, 0.95) == pytest.approx(0.2, abs=0.06)
    assert mass(0.5, 0.6) + mass(0.03, 0.12) < 0.08  # little mass between the components
    mean = float(prior @ grid.GRID)
    assert mean == pytest.approx(p.mean(), abs=0.02)


def test_prior_fit_with_multiplicities_equals_repeated_rows():
    k, n, c = np.array([0, 3, 8]), np.array([8, 8, 8]), np.array([5, 2, 3])
    a = grid.fit_prior(k, n, c, iters=50)
    b = grid.fit_prior(np.repeat(k, c), np.repeat(n, c), iters=50)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_few_prompts_give_the_flat_prior():
    np.testing.assert_array_equal(grid.fit_prior(np.array([1]), np.array([8])), grid.FLAT)


def test_expected_value_matches_monte_carlo():
    """E[u(p)(1 - p^N - (1-p)^N)] under a grid posterior equals the average over draws of p
    from that posterior, for each objective."""
    rng = np.random.default_rng(1)
    prior = grid.fit_prior(rng.binomial(8, rng.beta(0.4, 0.6, 3000)), np.full(3000, 8))
    w = grid.posterior(prior, np.array([0.0, 3.0, 7.0]), np.array([8.0, 5.0, 1.0]))
    n = np.array([4, 12, 30])
    for obj, u in objectives.U_WEIGHTS.items():
        exact = objectives.expected_value(w, n, obj)
        for row in range(3):
            j = rng.choice(grid.GRID_POINTS, size=200_000, p=w[row])
            p = grid.GRID[j]
            mc = (u[j] * (1 - p ** n[row] - (1 - p) ** n[row])).mean()
            assert exact[row] == pytest.approx(mc, rel=0.02, abs=2e-4), (obj, row)


def test_gain_table_is_the_difference_of_the_value_table_and_decreasing():
    for obj, u in objectives.U_WEIGHTS.items():
        v = grid.value_table(u, 40)
        g = grid.gain_table(u, 40)
        np.testing.assert_allclose(np.diff(v, axis=1), g[:, :-1], atol=1e-15)
        assert np.all(np.diff(g, axis=1) <= 1e-18), obj  # concave from N = 0 on


def test_the_gradient_objectives_are_convex_only_up_to_two_rollouts():
    """Why the gradient objectives are solved on their concave envelope: one rollout never
    carries a gradient (F(1) = F(0) = 0), so the gain rises from the first rollout to the
    second and a greedy on the values would not be exact when min_n < 2; from N = 1 on they
    are concave."""
    for objective in objectives.GRADIENTS:
        for p in (0.005, 0.05, 0.3, 0.7, 0.99):
            d2 = np.diff(np.diff(objectives.value_table(objective, 40)[_nearest(p)]))
            assert d2[0] > 0 and np.all(d2[1:] <= 1e-12), (objective, p)


def _visits(rows):
    """rows: per prompt, a list of (step, n, k, milli_logit), oldest first."""
    out = np.full((len(rows), RECENT_KEPT, VISIT_FIELDS), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        for j, v in enumerate(r):
            out[i, j] = v
    return out


def test_visit_weights_by_hand():
    v = _visits([[(10, 8, 2, 0), (500, 8, 4, 0), (9000, 4, 4, 0)], [], [(3, 8, 8, 0)]])
    w = posterior.visit_weights(v, 9001, visit_half_life=0.0)
    np.testing.assert_array_equal(w[0, :3], [1, 1, 1])  # no decay however old
    assert w[1].sum() == 0 and w[0, 3:].sum() == 0  # no visit weighs nothing
    w = posterior.visit_weights(v, 9001, visit_half_life=1.0)
    np.testing.assert_allclose(w[0, :3], [0.25, 0.5, 1.0])  # by visits, newest = 1
    np.testing.assert_allclose(w[2, :1], [1.0])  # one visit long ago still weighs 1
    w = posterior.visit_weights(v, 9010, visit_half_life=0.0, half_life_steps=10.0)
    np.testing.assert_allclose(w[0, 2], 0.5)  # explicit step half-life still applies


def test_drift_by_hand():
    v = _visits([[(1, 8, 2, -1000), (5, 8, 4, 500)], [(2, 8, 0, 250)], []])
    d = posterior.visit_drift(v, now_logit=1.0)
    np.testing.assert_allclose(d[0, :2], [2.0, 0.5])
    assert posterior.last_visit_drift(v, 1.0) == pytest.approx((0.5 + 0.75) / 2)
    assert posterior.last_visit_drift(v[2:], 1.0) == 0.0


def test_drift_moves_the_posterior_up():
    """0 of 8 seen when the namespace's logit was 2 lower: today's posterior mean is higher
    than without the shift, and the visit still counts (lower than the prior's mean)."""
    prior = grid.FLAT
    v = _visits([[(1, 8, 0, -2000)]])
    w0 = posterior.eb_posterior(prior, v, None, 2, 0.0)
    w1 = posterior.eb_posterior(prior, v, 0.0, 2, 0.0)
    m0, m1 = float((w0 @ grid.GRID)[0]), float((w1 @ grid.GRID)[0])
    assert m0 < m1 < float(grid.shift_prior(prior, 2.0) @ grid.GRID)


def test_loglik_without_drift_equals_the_counts_posterior():
    v = _visits([[(1, 8, 3, 0), (9, 6, 1, 0)]])
    w = posterior.eb_posterior(grid.FLAT, v, None, 10, 0.0)
    np.testing.assert_allclose(w, grid.posterior(grid.FLAT, np.array([4.0]), np.array([10.0])))


@st.composite
def eb_instances(draw):
    m = draw(st.integers(1, 10))
    lo = draw(st.integers(0, 3))
    hi = draw(st.integers(max(lo, 1), lo + 10))
    budget = draw(st.integers(m * lo, m * hi))
    t = np.array(draw(st.lists(st.integers(0, 16), min_size=m, max_size=m)), dtype=float)
    frac = np.array(draw(st.lists(st.floats(0, 1), min_size=m, max_size=m)))
    s = np.floor(frac * t)
    obj = draw(st.sampled_from(sorted(objectives.OBJECTIVES)))
    return Problem(budget, lo, hi, Mode.EB, objective=obj), s, t


@settings(max_examples=150, deadline=None)
@given(eb_instances())
def test_eb_objective_equals_the_dp(inst):
    problem, s, t = inst
    prior = grid.fit_prior(np.array([0, 1, 4, 8] * 3), np.full(12, 8))
    w = grid.posterior(prior, s, t - s)
    batch = Batch(s, t, s + 1, t - s + 1, weights=w)
    sol = solver.solve(problem, batch)
    ns = np.arange(problem.min_n, problem.max_n + 1)
    table = np.stack(
        [objectives.expected_value(w, np.full(len(s), n), problem.objective) for n in ns], 1
    )
    _, best = dp.dp_allocate(table, problem.budget - len(s) * problem.min_n)
    if problem.objective in objectives.CONCAVE:  # exact
        assert sol.objective == pytest.approx(best, rel=1e-9, abs=1e-12)
        assert sol.gap_bound == 0.0
    else:  # within the certified gap of the optimum, never above it
        assert sol.objective <= best + 1e-9
        assert sol.objective >= best - sol.gap_bound - 1e-9
    assert sol.n.sum() == problem.budget
    assert sol.n.min() >= problem.min_n and sol.n.max() <= problem.max_n


def test_unknown_objective_is_refused():
    from krl.common.errors import InvalidArgument

    b = Batch(np.zeros(2), np.zeros(2), np.ones(2), np.ones(2))
    with pytest.raises(InvalidArgument, match="objective"):
        solver.solve(Problem(8, 2, 8, Mode.EB, objective="vibes"), b)


def test_eb_solve_with_wide_bounds_and_a_spread_of_posteriors():
    """top_units widens rows past max_n - min_n and masks the excess: the gain rows must exist
    there (a regression: a 64-wide table was asked for 100 columns)."""
    rng = np.random.default_rng(5)
    m = 64
    s = rng.binomial(8, rng.beta(0.3, 0.3, m)).astype(float)
    t = np.full(m, 8.0)
    w = grid.posterior(grid.fit_prior(s, t), s, t - s)
    w[0] = 0
    w[0, -20] = 1  # one prompt nearly solved: its gains stay high far out
    batch = Batch(s, t, s + 1, t - s + 1, weights=w)
    for budget in (m * 2, m * 8, m * 40, m * 64):
        sol = solver.solve(Problem(budget, 2, 64, Mode.EB), batch)
        assert sol.n.sum() == budget and sol.n.min() >= 2 and sol.n.max() <= 64


def test_visit_loglik_equals_the_direct_sum():
    """The log-likelihood computed once per distinct drift equals the sum over visits of
    k log sigmoid(z - d) + (n - k) log(1 - sigmoid(z - d))."""
    rng = np.random.default_rng(2)
    m, v = 50, RECENT_KEPT
    n = rng.integers(1, 20, (m, v)).astype(float)
    k = np.floor(rng.uniform(0, 1, (m, v)) * (n + 1)).clip(0, n)
    w = rng.uniform(0, 1, (m, v)) * (rng.uniform(size=(m, v)) > 0.3)
    d = rng.choice([-0.5, 0.0, 0.25, 1.7], size=(m, v))
    got = grid.visit_loglik(n, k, w, d)
    z = grid.GRID_LOGIT[None, None, :] - d[:, :, None]
    p = 1 / (1 + np.exp(-z))
    want = (w[:, :, None] * (k[:, :, None] * np.log(p) + (n - k)[:, :, None] * np.log1p(-p))).sum(1)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
