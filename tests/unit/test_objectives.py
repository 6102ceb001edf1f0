"""Mode eb's objectives: the value tables against Monte Carlo, the concave envelope by hand,
and the concentrating tie rule of the solver on hull chords."""

import numpy as np
import pytest

from krl.allocator.solve import grid, objectives, selection, solver
from krl.allocator.solve.solver import Batch, Mode, Problem
from krl_client.messages import LOSS_AGGS, OBJECTIVE_FOR_LOSS
from krl_client.messages import OBJECTIVES as CLIENT_OBJECTIVES


def test_client_names_the_same_objectives():
    assert CLIENT_OBJECTIVES == objectives.OBJECTIVES
    assert objectives.DEFAULT in objectives.OBJECTIVES
    # every loss aggregation has an objective made for it, and it is one the allocator has
    assert tuple(OBJECTIVE_FOR_LOSS) == LOSS_AGGS
    assert set(OBJECTIVE_FOR_LOSS.values()) <= set(objectives.OBJECTIVES)


def test_modes_are_the_same_on_the_wire_in_the_solver_and_in_the_client():
    """One list of modes: the proto enum (retired numbers reserved), the solver's Mode, the
    client's names and the gRPC adapter's mapping agree."""
    from krl.allocator.api.grpc_api import MODE_FROM_PB
    from krl_client import MODES
    from krl_client.api import allocator_pb2 as pb

    wire = {v.name for v in pb.AllocationMode.DESCRIPTOR.values} - {"ALLOCATION_MODE_UNSPECIFIED"}
    assert set(MODES) == {m.value for m in Mode} == {"eb", "paper", "uniform"}
    assert wire == {f"ALLOCATION_MODE_{m.upper()}" for m in MODES}
    assert set(MODE_FROM_PB.values()) == set(Mode)


def _named(text: str) -> set[str]:
    """The objectives a text names (quoted or bare, as whole words)."""
    import re

    return {o for o in CLIENT_OBJECTIVES if re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)}


def test_every_copy_of_the_objective_list_names_exactly_the_declared_ones():
    """krl_client.messages declares the list; the proto comment, the settings help, the Helm
    schema and values, the experiment CLI's help name it again for readers: each must name all
    of them (a new objective forgotten in one fails here)."""
    import json
    from pathlib import Path

    from krl.allocator.settings import AllocatorSettings
    from krl.experiment.cli import SIM_HELP

    root = Path(__file__).resolve().parents[2]
    proto = (root / "proto/krl/allocator/v1/allocator.proto").read_text()
    comment = proto[: proto.index("string objective = 10;")].rsplit("optional double", 1)[1]
    schema = json.loads((root / "deploy/helm/knapsack-rl/values.schema.json").read_text())
    enum = schema["properties"]["allocator"]["properties"]["objective"]["enum"]
    values = next(
        line
        for line in (root / "deploy/helm/knapsack-rl/values.yaml").read_text().splitlines()
        if line.strip().startswith("objective:")
    )
    copies = {
        "proto comment": _named(comment),
        "settings help": _named(AllocatorSettings.model_fields["objective"].description),
        "helm schema": set(enum),
        "helm values": _named(values),
        "experiment help": _named(SIM_HELP["objective"]),
    }
    for where, names in copies.items():
        assert names == set(CLIENT_OBJECTIVES), where


def test_gradient_table_matches_monte_carlo():
    """E[sqrt(K(N-K))] at a grid p is the mean over binomial draws; group-gradient is it / N,
    sqrt-gradient it / sqrt(N)."""
    rng = np.random.default_rng(3)
    grad = objectives.gradient_sums(40)
    group = objectives.value_table("group-gradient", 40)
    sqrt = objectives.value_table("sqrt-gradient", 40)
    for j in (5, 20, 30, 44):
        p = grid.GRID[j]
        for n in (2, 7, 40):
            k = rng.binomial(n, p, size=400_000)
            x = np.sqrt(k * (n - k))
            tol = 5 * x.std() / np.sqrt(x.size) + 1e-12  # five Monte Carlo standard errors
            assert abs(grad[j, n] - x.mean()) < tol, (j, n)
            assert abs(group[j, n] - x.mean() / n) < tol / n
            assert abs(sqrt[j, n] - x.mean() / np.sqrt(n)) < tol / np.sqrt(n)


def test_expected_value_under_a_posterior_matches_monte_carlo():
    rng = np.random.default_rng(4)
    prior = grid.fit_prior(rng.binomial(8, rng.beta(0.3, 0.9, 3000)), np.full(3000, 8))
    w = grid.posterior(prior, np.array([0.0, 2.0, 6.0]), np.array([8.0, 6.0, 2.0]))
    n = np.array([16, 5, 30])
    exact = objectives.expected_value(w, n, "sqrt-gradient")
    for row in range(3):
        p = grid.GRID[rng.choice(grid.GRID_POINTS, size=300_000, p=w[row])]
        x = np.sqrt((k := rng.binomial(n[row], p)) * (n[row] - k)) / np.sqrt(n[row])
        assert abs(exact[row] - x.mean()) < 5 * x.std() / np.sqrt(x.size), row


def test_concave_majorant_by_hand():
    # increments 1, 3, 2, 0.5: the majorant pools the first two (2, 2), keeps 2, 0.5
    np.testing.assert_allclose(
        objectives.concave_majorant_gains(np.array([[1.0, 3.0, 2.0, 0.5]])), [[2, 2, 2, 0.5]]
    )
    # a convex run is one chord; an already concave row is unchanged
    np.testing.assert_allclose(
        objectives.concave_majorant_gains(np.array([[0.0, 1.0, 2.0], [3.0, 2.0, 1.0]])),
        [[1.0, 1.0, 1.0], [3.0, 2.0, 1.0]],
    )


@pytest.mark.parametrize("objective", objectives.OBJECTIVES)
@pytest.mark.parametrize(("lo", "hi"), [(2, 64), (0, 16), (4, 9)])
def test_envelope_is_concave_above_the_value_and_touches_it_at_the_ends(objective, lo, hi):
    gains, hull = objectives.envelope(objective, lo, hi)
    f = objectives.value_table(objective, hi)[:, lo:]
    room = hi - lo
    assert np.all(np.diff(gains[:, :room], axis=1) <= 1e-12)
    assert np.all(hull >= f - 1e-12)
    np.testing.assert_allclose(hull[:, [0, -1]], f[:, [0, -1]], atol=1e-9)
    assert np.all(gains[:, room:] == 0)
    if objective in objectives.CONCAVE:
        np.testing.assert_allclose(hull, f, atol=1e-12)


def test_fill_in_order_gives_whole_rows():
    n = np.zeros(4, dtype=np.int64)
    left = selection.fill_in_order(n, np.array([3, 5, 0, 5]), 7)
    assert left == 0
    assert n.tolist() == [0, 5, 0, 2]  # most room first, ties by index, the rest partial
    n = np.zeros(2, dtype=np.int64)
    assert selection.fill_in_order(n, np.array([1, 2]), 5) == 2
    assert n.tolist() == [1, 2]


def test_identical_hard_prompts_get_whole_chords_not_a_thin_spread():
    """Eight prompts with the same posterior at p = 0.02 and one rollout each on average: F is
    0 at one rollout (no gradient), so the envelope starts with a chord from 0 to 2; a prompt
    is worth a chord only at its end, so the solver gives whole chords (at most one prompt
    stops inside one) where the even spread is worth nothing."""
    m, lo, hi = 8, 0, 64
    w = np.zeros((m, grid.GRID_POINTS))
    w[:, int(np.argmin(np.abs(grid.GRID - 0.02)))] = 1.0
    batch = Batch(np.zeros(m), np.zeros(m), np.ones(m), np.ones(m), weights=w)
    for objective in objectives.GRADIENTS:
        sol = solver.solve(Problem(m, lo, hi, Mode.EB, objective=objective), batch)
        assert sol.n.sum() == m
        _, hull = objectives.envelope(objective, lo, hi)
        f = objectives.value_table(objective, hi)
        j = int(np.argmax(w[0]))
        inside = hull[j, sol.n - lo] > f[j, sol.n] + 1e-12
        assert inside.sum() <= 1 and (sol.n == 1).sum() <= 1, sol.n
        assert objectives.expected_value(w, np.ones(m, dtype=np.int64), objective).sum() == 0
        assert sol.objective > 0 and sol.gap_bound >= 0
