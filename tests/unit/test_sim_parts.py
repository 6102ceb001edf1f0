"""The simulator's pure parts: difficulty specs, the closed-form expected ratio, the learning
model's update, DAPO's keep rule, and the experiment analysis (interpolation, pairing)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from krl.experiment.analysis import RunCurves, effective_ratio, rollouts_to_reach, summarize
from krl.rl.dynamic import keep_mask
from krl.sim.engine import SimConfig
from krl.sim.population import (
    Difficulty,
    LearningModel,
    Population,
    expected_effective_ratio,
    sigmoid,
)
from krl_client.session import informative


def test_difficulty_specs():
    rng = np.random.default_rng(0)
    p = Difficulty.parse("beta:2,6").sample(rng, 200_000)
    assert p.mean() == pytest.approx(0.25, abs=0.003)
    assert list(Difficulty.parse("levels:0.1,0.9").sample(rng, 5)) == [0.1, 0.9, 0.1, 0.9, 0.1]
    assert set(Difficulty.parse("fixed:0.3").sample(rng, 4)) == {0.3}
    assert str(Difficulty.parse("beta:0.2,0.4")) == "beta:0.2,0.4"
    for bad, word in [
        ("beta:1", "beta:A,B"),
        ("beta:0,1", "A, B > 0"),
        ("levels:1.5", "[0, 1]"),
        ("fixed:0.1,0.2", "fixed:P"),
        ("gauss:1", "unknown"),
        ("beta:a,b", "numbers"),
    ]:
        with pytest.raises(ValueError, match=word):
            Difficulty.parse(bad)


def test_expected_effective_ratio_by_hand():
    # p = 0.5, n = 2: P(mixed) = 1 - 0.25 - 0.25 = 0.5; p = 0 and p = 1 never mix
    assert expected_effective_ratio(np.array([0.5]), 2) == pytest.approx(0.5)
    assert expected_effective_ratio(np.array([0.0, 1.0]), 8) == 0.0
    # rollout-weighted: n = (2, 6) at p = 0.5 -> (2*0.5 + 6*(1 - 2/64)) / 8
    got = expected_effective_ratio(np.array([0.5, 0.5]), np.array([2, 6]))
    assert got == pytest.approx((2 * 0.5 + 6 * (1 - 2 / 64)) / 8)


def _pop(agg: str, d=(0.0, 0.0, 0.0), lr=(0.1, 0.2)) -> Population:
    return Population(
        np.array(d, dtype=float), np.array([0.0, 1.0]), LearningModel(lr[0], lr[1], agg)
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("agg", ["constant", "token-mean", "group-mean"])
def test_update_by_hand(agg):
    pop = _pop(agg)
    idx, n, k = np.array([0, 1, 2]), np.array([4, 12, 8]), np.array([2, 3, 0])
    trained = (k > 0) & (k < n)
    pop.update(idx, n, k, trained, budget=24)
    s = np.array([0.5, math.sqrt(0.25 * 0.75), 0.0])
    g = {"constant": n * s / 24, "token-mean": n * s / 16, "group-mean": s / 3}[agg]
    assert pop.theta == pytest.approx(0.1 * g.sum())
    assert pop.u == pytest.approx(0.2 * 3 * g)
    assert pop.u[2] == 0.0  # an all-wrong group carries no gradient
    assert pop.heldout_accuracy() == pytest.approx(
        float(sigmoid(pop.theta + np.array([0, 1.0])).mean())
    )


def test_static_model_and_no_trained_groups_move_nothing():
    pop = _pop("constant", lr=(0.0, 0.0))
    pop.update(np.array([0, 1]), np.array([4, 4]), np.array([2, 1]), np.array([True, True]), 8)
    assert pop.theta == 0 and not pop.u.any()
    pop = _pop("token-mean")
    pop.update(np.array([0, 1]), np.array([4, 4]), np.array([0, 4]), np.array([False, False]), 8)
    assert pop.theta == 0 and not pop.u.any()


def test_dapo_keeps_the_first_informative_groups_up_to_the_room():
    """Informative is one rule, the rewards differ (graded rewards too); a group of one never is."""
    groups = [[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 1, 1], [0.5, 0.5, 0.5, 0.75], [1, 1, 1, 0], [1]]
    flags = [informative(g) for g in groups]
    assert flags == [False, True, False, True, True, False]
    assert keep_mask(flags, 2) == [False, True, False, True, False, False]
    assert keep_mask(flags, 0) == [False] * 6
    assert keep_mask(flags, 10) == [False, True, False, True, True, False]


def test_sim_config_errors_name_the_field():
    SimConfig().validate()
    for kw, word in [
        ({"prompts": 10}, "prompts"),
        ({"min_n": 9}, "min_n"),
        ({"loss_agg": "sum"}, "loss_agg"),
        ({"difficulty": "x"}, "difficulty"),
        ({"dapo_max_rounds": 0}, "dapo_max_rounds"),
    ]:
        with pytest.raises(ValueError, match=word):
            SimConfig(**kw).validate()


def test_rollouts_to_reach_interpolates_on_the_running_max():
    x = np.array([0, 100, 200, 300.0])
    acc = np.array([0.2, 0.4, 0.3, 0.6])
    assert rollouts_to_reach(x, acc, 0.3) == pytest.approx(50.0)
    assert rollouts_to_reach(x, acc, 0.4) == pytest.approx(100.0)
    # the dip at 200 does not count: from best 0.4 at 200 to 0.6 at 300
    assert rollouts_to_reach(x, acc, 0.5) == pytest.approx(250.0)
    assert rollouts_to_reach(x, acc, 0.7) == math.inf
    assert rollouts_to_reach(x, acc, 0.1) == 0.0


def _run(strategy, seed, eff, accs, step_rollouts=10):
    rows, total = [], 0
    rows.append({"kind": "eval", "step": 0, "rollouts_total": 0, "accuracy": {"all": accs[0]}})
    for i, a in enumerate(accs[1:], start=1):
        total += step_rollouts
        rows.append(
            {
                "kind": "step",
                "step": i,
                "rollouts": step_rollouts,
                "rollouts_total": total,
                "effective_rollout_ratio": eff,
                "max_n": 8,
                "n_counts": {"8": 2},
            }
        )
        rows.append({"kind": "eval", "step": i, "rollouts_total": total, "accuracy": {"all": a}})
    return RunCurves.from_rows(strategy, seed, rows)


def test_summary_pairs_seeds_and_reads_the_compute_multiplier():
    runs = [
        _run("uniform", 0, 0.4, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
        _run("knapsack-paper", 0, 0.5, [0.0, 0.2, 0.4, 0.6]),
        _run("uniform", 1, 0.5, [0.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]),
        _run("knapsack-paper", 1, 0.6, [0.0, 0.2, 0.4, 0.6]),
    ]
    out = {s.strategy: s for s in summarize(runs, budget=30)}
    kp = out["knapsack-paper"]
    assert kp.vs_uniform.values == pytest.approx([0.25, 0.2])
    # seed 0: knapsack reaches 0.6 at 30 rollouts, uniform at 60 -> 2x; seed 1: never -> >= 60/30
    assert kp.compute_multiplier.values == pytest.approx([2.0, 2.0])
    assert kp.multiplier_lower_bounds == 1
    # uniform's ratio counts only the rows within the equal budget
    assert out["uniform"].effective_ratio.values == pytest.approx([0.4, 0.5])
    assert out["uniform"].final_accuracy.values == pytest.approx([0.3, 0.1])
    assert (
        effective_ratio(
            [
                {"rollouts": 10, "effective_rollout_ratio": 1.0},
                {"rollouts": 30, "effective_rollout_ratio": 0.0},
            ]
        )
        == 0.25
    )


def test_last_mean_and_area_under_by_hand():
    from krl.experiment.analysis import area_under, last_mean

    x = np.array([0.0, 10, 20, 30])
    acc = np.array([0.2, 0.4, 0.4, 0.6])
    assert last_mean(acc) == pytest.approx((0.4 + 0.4 + 0.6) / 3)
    assert last_mean(acc, 10) == pytest.approx(0.4)
    # trapezoids: (0.3 + 0.4 + 0.5) x 10 / 30
    assert area_under(x, acc, 30) == pytest.approx(0.4)
    # held flat after the last evaluation; points past the budget are not counted
    assert area_under(x, acc, 40) == pytest.approx((12 + 6) / 40)
    assert area_under(x, acc, 20) == pytest.approx((3 + 4) / 20)
    assert math.isnan(area_under(np.array([]), np.array([]), 30))


def test_learning_table_pairs_seeds_on_the_less_noisy_accuracies():
    from krl.experiment.analysis import learning_table

    runs = [
        _run("uniform", 0, 0.4, [0.1, 0.1, 0.2, 0.2, 0.3, 0.4, 0.5]),
        _run("knapsack-eb", 0, 0.5, [0.1, 0.3, 0.4, 0.5]),
        _run("uniform", 1, 0.4, [0.1, 0.2, 0.2, 0.2, 0.2]),
        _run("knapsack-eb", 1, 0.5, [0.1, 0.2, 0.3, 0.3]),
    ]
    out = {s.strategy: s for s in summarize(runs, budget=30)}
    kn = out["knapsack-eb"]
    # seed 0: last three within 30 rollouts 0.3,0.4,0.5 vs 0.1,0.2,0.2; seed 1: 0.2,0.3,0.3 vs 0.2
    assert kn.last_vs_uniform.values == pytest.approx([0.4 - 0.5 / 3, 0.8 / 3 - 0.2])
    assert kn.auc_vs_uniform.values[0] == pytest.approx((0.2 + 0.35 + 0.45 - 0.1 - 0.15 - 0.2) / 3)
    table = learning_table(list(out.values()))
    assert "knapsack-eb" in table and "uniform's rollouts to match" in table


def test_seeds_take_a_count_or_a_list_and_refuse_a_seed_written_as_a_count():
    import argparse

    from krl.experiment.cli import _seeds

    assert _seeds("3") == (0, 1, 2)
    assert _seeds("0,5,7") == (0, 5, 7)
    assert _seeds("616,") == (616,)
    with pytest.raises(argparse.ArgumentTypeError, match="for the one seed 616 write '616,'"):
        _seeds("616")
    for bad in ("0", "1,1", "-1,2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            _seeds(bad)
