"""Calibration metrics by hand, and the replay's rule: a visit is predicted from what came
before its step only."""

import math

import numpy as np
import pytest

from krl.experiment import calibrate as cal


def test_log_loss_and_brier_by_hand():
    pred = np.array([0.9, 0.2, 0.5, 0.0])
    y = np.array([1.0, 0.0, 1.0, 1.0])
    want = -(math.log(0.9) + math.log(0.8) + math.log(0.5) + math.log(cal.EPS)) / 4
    assert cal.log_loss(pred, y) == pytest.approx(want)
    assert cal.brier(pred, y) == pytest.approx((0.01 + 0.04 + 0.25 + 1.0) / 4)


def test_deciles_by_hand():
    pred = np.array([0.1, 0.2, 0.8, 0.9])
    y = np.array([0.0, 1.0, 1.0, 1.0])
    d = cal.deciles(pred, y, bins=2)
    assert d == [
        {"predicted": pytest.approx(0.15), "observed": 0.5, "visits": 2},
        {"predicted": pytest.approx(0.85), "observed": 1.0, "visits": 2},
    ]


def test_replay_predicts_from_the_past_only():
    """Prompt a: 4 of 8 at step 1, then at step 2. Prompt b first seen at step 2 (not scored).
    The paper model's prediction at step 2 is 1 - 0.5^8 - 0.5^8, whatever step 2 brings."""
    visits = [(1, "a", 8, 4), (2, "a", 8, 0), (2, "b", 8, 3)]
    t = cal.Trace.from_visits("t", visits)
    sc = {s.model: s for s in cal.replay(t, {"paper": cal.paper_model})}
    p = 1 - 2 * 0.5**8
    assert sc["paper"].visits == 1
    assert sc["paper"].log_loss == pytest.approx(-math.log(1 - p))  # it was all wrong


def test_every_model_scores_a_simulated_trace():
    t = cal.trace_from_sim("beta:0.3,0.5", 256, 20, seed=3)
    assert t.step.size == 20 * 64
    scores = cal.replay(t, cal.MODELS)
    assert {s.model for s in scores} == set(cal.MODELS)
    for s in scores:
        assert s.visits > 0 and 0 < s.brier < 1 and math.isfinite(s.log_loss)


@pytest.mark.parametrize(("a", "b"), [(1.0, 1.0), (0.5, 3.0), (7.5, 2.25)])
def test_the_beta_models_moments_match_monte_carlo(a, b):
    p = np.random.default_rng(1).beta(a, b, 1_000_000)
    for x, y in ((4.0, 0.0), (0.0, 16.0), (1.0, 2.0)):
        draws = p**x * (1 - p) ** y
        exact = float(cal.beta_moment(np.array(a), np.array(b), np.array(x), np.array(y)))
        assert abs(draws.mean() - exact) < 5 * draws.std() / math.sqrt(p.size) + 1e-12
