import numpy as np

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


def test_paper_need_matches_the_formula():
    p = np.array([0.5, 0.9, 0.1, 0.99])
    need = values.paper_need(p, 0.9, 2, 64)
    expected = np.clip(np.ceil(np.log(0.1) / np.log(np.maximum(p, 1 - p))), 2, 64)
    assert need.tolist() == expected.astype(int).tolist()
    assert need.tolist() == [4, 22, 22, 64]
