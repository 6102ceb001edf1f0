import numpy as np

from krl.allocator.solve.prior import PriorConfig, RateMoments, fit_prior


def test_prior_recovers_a_beta_population():
    rng = np.random.default_rng(0)
    a, b, t = 2.0, 6.0, 16
    p = rng.beta(a, b, 20_000)
    s = rng.binomial(t, p)
    a0, b0 = fit_prior(RateMoments.from_counts(s, np.full(p.size, t)), PriorConfig(0.5, 100.0))
    assert abs(a0 / (a0 + b0) - 0.25) < 0.01
    assert abs((a0 + b0) - 8.0) < 1.0  # the binomial noise of 16 trials is corrected for


def test_few_prompts_give_the_flat_prior():
    assert fit_prior(RateMoments.from_counts(np.array([1, 2]), np.array([4, 4]))) == (1.0, 1.0)


def test_strength_is_clipped():
    # all prompts identical: no between-prompt variance -> strongest prior allowed
    m = RateMoments.from_counts(np.full(100, 8), np.full(100, 16))
    a0, b0 = fit_prior(m, PriorConfig(2.0, 50.0))
    assert abs(a0 + b0 - 50.0) < 1e-9 and abs(a0 - 25.0) < 1e-9
