import numpy as np
import pytest

from krl.allocator.solve import values


def test_paper_gains_are_the_differences_of_the_value():
    p = np.array([0.05, 0.3, 0.5, 0.77, 0.99])
    start = np.array([2, 3, 4, 5, 6])
    g = values.paper_gains(p, start, 20)
    n = start[:, None] + np.arange(21)
    v = values.paper_value(n, p[:, None])
    np.testing.assert_allclose(g, np.diff(v, axis=1), rtol=1e-10, atol=1e-15)


def test_paper_gains_decrease_so_the_value_is_concave():
    p = np.linspace(0.01, 0.99, 50)
    g = values.paper_gains(p, np.full(50, 1), 60)
    assert np.all(np.diff(g, axis=1) <= 1e-18)
    assert np.all(g > 0)


def test_paper_value_is_zero_without_signal():
    assert values.paper_value(np.array([8, 8, 8]), np.array([0.0, 1.0, np.nan])).tolist() == [
        0,
        0,
        0,
    ]


@pytest.mark.parametrize(("a", "b"), [(1.0, 1.0), (0.5, 3.0), (7.5, 2.25), (0.8, 40.0)])
def test_beta_expectations_match_monte_carlo(a, b):
    rng = np.random.default_rng(1)
    p = rng.beta(a, b, 2_000_000)
    for n in (1, 4, 16):
        mc = np.mean((1 - p**n - (1 - p) ** n) * p * (1 - p) ** 2)
        exact = float(values.bayes_value(np.array(n), np.array(a), np.array(b)))
        se = np.std((1 - p**n - (1 - p) ** n) * p * (1 - p) ** 2) / np.sqrt(p.size)
        assert abs(mc - exact) < 5 * se + 1e-9, (n, mc, exact)


def test_bayes_gains_are_the_differences_of_the_expected_value():
    a = np.array([0.3, 1.0, 5.0, 2.0])
    b = np.array([4.0, 1.0, 1.5, 60.0])
    start = np.array([2, 1, 7, 3])
    g = values.bayes_gains(a, b, start, 30)
    n = start[:, None] + np.arange(31)
    v = values.bayes_value(n, a[:, None], b[:, None])
    np.testing.assert_allclose(g, np.diff(v, axis=1), rtol=1e-8, atol=1e-14)
    assert np.all(np.diff(g, axis=1) < 0)


def test_an_unsolved_prompt_keeps_a_value_that_grows_with_n():
    # 0 of 16 under a prior of mean 0.3: the point estimate says worthless, the posterior not.
    a, b = np.array(0.6 + 0.0), np.array(1.4 + 16.0)
    v = values.bayes_value(np.array([2, 8, 32, 128]), a, b)
    assert np.all(np.diff(v) > 0) and v[0] > 0
    assert float(values.paper_value(np.array(128), np.array(0.0))) == 0.0


def test_paper_need_matches_the_formula():
    p = np.array([0.5, 0.9, 0.1, 0.99])
    need = values.paper_need(p, 0.9, 2, 64)
    expected = np.clip(np.ceil(np.log(0.1) / np.log(np.maximum(p, 1 - p))), 2, 64)
    assert need.tolist() == expected.astype(int).tolist()
    assert need.tolist() == [4, 22, 22, 64]
