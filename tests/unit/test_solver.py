import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from krl.allocator.solve import solver, values
from krl.allocator.solve.solver import Batch, Mode, Problem
from krl.common.errors import InvalidArgument
from krl.tools import paper_dp as dp


def make_batch(s, t, a=None, b=None) -> Batch:
    s = np.asarray(s, dtype=float)
    t = np.asarray(t, dtype=float)
    a = s + 1.0 if a is None else np.asarray(a, dtype=float)
    b = t - s + 1.0 if b is None else np.asarray(b, dtype=float)
    return Batch(s, t, a, b)


@st.composite
def instances(draw):
    m = draw(st.integers(1, 12))
    lo = draw(st.integers(0, 4))
    hi = draw(st.integers(max(lo, 1), lo + 12))
    budget = draw(st.integers(m * lo, m * hi))
    t = np.array(draw(st.lists(st.integers(1, 16), min_size=m, max_size=m)))
    frac = np.array(draw(st.lists(st.floats(0, 1), min_size=m, max_size=m)))
    s = np.floor(frac * t)
    return Problem(budget, lo, hi), make_batch(s, t)


@settings(max_examples=150, deadline=None)
@given(instances())
def test_paper_objective_equals_the_dp(inst):
    problem, batch = inst
    problem = Problem(problem.budget, problem.min_n, problem.max_n, Mode.PAPER, fallback=False)
    sol = solver.solve(problem, batch)
    ns = np.arange(problem.min_n, problem.max_n + 1)[None, :]
    table = values.paper_value(ns, (batch.last_successes / batch.last_trials)[:, None])
    _, best = dp.dp_allocate(table, problem.budget - len(batch) * problem.min_n)
    assert sol.objective == pytest.approx(best, rel=1e-9, abs=1e-12)
    assert sol.n.sum() == problem.budget
    assert sol.n.min() >= problem.min_n and sol.n.max() <= problem.max_n


@settings(max_examples=100, deadline=None)
@given(instances(), st.booleans())
def test_paper_with_fallback_always_sums_to_the_budget(inst, fallback):
    problem, batch = inst
    batch.last_trials[::3] = 0  # some prompts never seen
    batch.last_successes[::3] = 0
    sol = solver.solve(
        Problem(problem.budget, problem.min_n, problem.max_n, Mode.PAPER, fallback), batch
    )
    assert sol.n.sum() == problem.budget
    assert sol.n.min() >= problem.min_n and sol.n.max() <= problem.max_n


def test_fallback_gives_the_surplus_to_unsolved_prompts():
    # two informative prompts needing 4 each (p = 0.5), one unsolved, one solved; budget 40
    batch = make_batch([4, 4, 0, 8], [8, 8, 8, 8])
    sol = solver.solve(Problem(40, 2, 32, Mode.PAPER, fallback=True), batch)
    assert sol.n.tolist() == [4, 4, 30, 2]
    assert sol.info["fallback_units"] == 28
    off = solver.solve(Problem(40, 2, 32, Mode.PAPER, fallback=False), batch)
    assert off.n[:2].sum() > 8  # without fallback the informative prompts take the budget


def test_unvisited_prompts_get_the_uniform_share_in_paper_mode():
    batch = make_batch([0, 0, 3], [0, 0, 8])
    sol = solver.solve(Problem(24, 2, 16, Mode.PAPER), batch)
    assert sol.n[:2].tolist() == [8, 8] and sol.n.sum() == 24


@pytest.mark.parametrize(
    ("problem", "m", "field", "words"),
    [
        (Problem(3, 2, 8), 2, "budget", "outside [4, 16]"),
        (Problem(17, 2, 8), 2, "budget", "outside [4, 16]"),
        (Problem(10, 9, 8), 2, "min_n", "greater than max_n"),
        (Problem(10, -1, 8), 2, "min_n", ">= 0"),
        (Problem(10, 2, 8), 0, "prompt_ids", "empty"),
    ],
)
def test_bad_problems_name_the_field(problem, m, field, words):
    with pytest.raises(InvalidArgument) as e:
        solver.validate(problem, m)
    assert e.value.field == field and words in e.value.message


def test_large_instance_is_exact_and_within_bounds():
    rng = np.random.default_rng(7)
    m = 4096
    t = np.full(m, 8.0)
    s = rng.binomial(8, rng.beta(0.5, 0.5, m)).astype(float)
    batch = make_batch(s, t)
    sol = solver.solve(Problem(8 * m, 2, 256, Mode.PAPER, fallback=False), batch)
    assert sol.n.sum() == 8 * m and sol.n.max() <= 256
    # optimality: no unit moved from one prompt to another improves the objective
    p = s / t
    up = values.paper_gains(p, sol.n, 1)[:, 0]
    down = values.paper_gains(p, np.maximum(sol.n - 1, 0), 1)[:, 0]
    can_up, can_down = sol.n < 256, sol.n > 2
    assert up[can_up].max() <= down[can_down].min() + 1e-15


@settings(max_examples=100, deadline=None)
@given(instances())
def test_uniform_mode_splits_the_budget_evenly(inst):
    """Mode uniform: every prompt budget // M, the first budget % M one more, within
    [min_n, max_n]; p is the Beta posterior mean; no history changes n."""
    problem, batch = inst
    m = len(batch)
    sol = solver.solve(Problem(problem.budget, problem.min_n, problem.max_n, Mode.UNIFORM), batch)
    assert sol.n.sum() == sol.budget_used == problem.budget
    assert sol.n.max() - sol.n.min() <= 1 and np.all(np.diff(sol.n) <= 0)
    assert np.all((sol.n >= problem.min_n) & (sol.n <= problem.max_n))
    np.testing.assert_allclose(sol.p, batch.alpha / (batch.alpha + batch.beta))
    other = make_batch(np.zeros(m), np.full(m, 16.0))
    same = solver.solve(Problem(problem.budget, problem.min_n, problem.max_n, Mode.UNIFORM), other)
    assert same.n.tolist() == sol.n.tolist()


def test_uniform_mode_refuses_a_budget_outside_the_bounds():
    with pytest.raises(InvalidArgument, match="outside"):
        solver.solve(Problem(17, 2, 8, Mode.UNIFORM), make_batch([0, 1], [4, 4]))
