"""The simulator against the real allocator code: in process over a real redis-server, and a
real `krl allocator` process over gRPC; and `krl experiment --backend sim` end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from krl.cli import main
from krl.common.procs import ServiceProcess, free_port
from krl.common.redis_server import EmbeddedRedis
from krl.experiment.analysis import RunCurves, effective_ratio
from krl.rl.rows import undeclared
from krl.rl.strategies import STRATEGIES
from krl.sim.backends import InProcessAllocator, ServiceAllocator
from krl.sim.engine import SimConfig, simulate
from krl.sim.population import Difficulty, Population, expected_effective_ratio

pytestmark = pytest.mark.integration

STATIC = SimConfig(
    difficulty="beta:0.5,0.5",
    prompts=256,
    heldout=64,
    prompts_per_step=32,
    rollouts_per_prompt=8,
    steps=160,
    eval_every=40,
    lr_shared=0.0,
    lr_own=0.0,
)


@pytest.fixture(scope="module")
def backend():
    b = InProcessAllocator(half_life_steps=20.0)
    yield b
    b.close()


def _steps(res):
    return [r for r in res.rows if r["kind"] == "step"]


def test_uniform_on_a_fixed_population_matches_the_closed_form(backend):
    res = simulate(STATIC, "uniform", 3, backend)
    assert not [undeclared(r) for r in res.rows if undeclared(r)]  # the keys of krl.rl.rows
    steps = _steps(res)
    p = Population.draw(Difficulty.parse(STATIC.difficulty), STATIC.prompts, STATIC.heldout, 3).p()
    closed = expected_effective_ratio(p, 8)
    # 160 steps are 20 whole epochs: every prompt is visited equally often, so the mean of the
    # per-step expectations is exactly the population's closed form
    assert np.mean([r["expected_effective_ratio"] for r in steps]) == pytest.approx(
        closed, abs=1e-12
    )
    # the draws: 160 x 32 groups; per-group mixing has variance <= 1/4, so sd <= 1/(2 sqrt(5120))
    drawn = effective_ratio(steps)
    assert abs(drawn - closed) < 4 * 0.5 / math.sqrt(160 * 32), (drawn, closed)
    assert all(r["n_counts"] == {"8": 32} and r["max_n"] == 8 for r in steps)
    # a static population does not learn
    accs = {r["accuracy"]["all"] for r in res.rows if r["kind"] == "eval"}
    assert len(accs) == 1


def test_every_outcome_reaches_redis_once(backend):
    cfg = replace(STATIC, steps=24)
    res = simulate(cfg, "knapsack-eb", 0, backend)
    ids = [f"p{i}" for i in range(cfg.prompts)]
    views = backend._runner.run(backend.allocator.prompt_views(res.namespace, ids, 24))
    assert sum(v.record.trials for v in views) == sum(r["rollouts"] for r in _steps(res))
    assert sum(v.record.visits for v in views) == 24 * cfg.prompts_per_step


def test_knapsack_rows_respect_the_budget_and_bounds(backend):
    for strategy in ("knapsack-paper", "knapsack-eb"):
        res = simulate(replace(STATIC, steps=40, min_n=2, max_n=40), strategy, 1, backend)
        for r in _steps(res):
            assert r["rollouts"] == STATIC.budget
            ns = [int(n) for n in r["n_counts"]]
            assert min(ns) >= 2 and max(ns) <= 40
        assert max(r["max_n"] for r in _steps(res)) > 8  # histories made the split uneven


def test_probe_allocates_the_first_epoch_and_reports_every_rollout_once(backend):
    """knapsack-probe: in the first epoch (8 steps), where knapsack-eb can only split evenly,
    the probe's outcomes make the split uneven and put more rollouts into mixed groups."""
    cfg = replace(STATIC, steps=8, min_n=2, max_n=32)
    eb, probe = (simulate(cfg, s, 2, backend) for s in ("knapsack-eb", "knapsack-probe"))
    assert all(r["n_counts"] == {"8": 32} for r in _steps(eb))
    assert all(r["rollouts"] == cfg.budget and r["max_n"] <= 32 for r in _steps(probe))
    assert all(min(int(n) for n in r["n_counts"]) >= 4 for r in _steps(probe))  # the probe
    assert max(r["max_n"] for r in _steps(probe)) > 8
    assert effective_ratio(_steps(probe)) > effective_ratio(_steps(eb))
    ids = [f"p{i}" for i in range(cfg.prompts)]
    views = backend._runner.run(backend.allocator.prompt_views(probe.namespace, ids, 8))
    assert sum(v.record.trials for v in views) == 8 * cfg.budget


def test_dapo_trains_on_full_batches_of_informative_groups(backend):
    cfg = replace(STATIC, difficulty="beta:0.3,0.3", steps=60, dapo_max_rounds=4)
    res = simulate(cfg, "dapo", 0, backend, rollout_budget=60 * cfg.budget)
    assert not [undeclared(r) for r in res.rows if undeclared(r)]  # the keys of krl.rl.rows
    steps = _steps(res)
    assert steps[-1]["rollouts_total"] == 60 * cfg.budget  # stops exactly at the equal budget
    assert len(steps) < 60  # fewer updates than uniform for the same rollouts
    for r in steps:
        assert 1 <= r["rounds"] <= 4 and r["rollouts"] == r["rounds"] * cfg.budget
        trained = r["effective_rollout_ratio"] * r["rollouts"]
        assert trained <= cfg.budget + 1e-9  # never more than M groups of n
        if r["rounds"] < 4 and r is not steps[-1]:
            assert trained == pytest.approx(cfg.budget)  # a batch stops once it is full
        mixed = r["effective_prompt_ratio"] * cfg.prompts_per_step * r["rounds"]
        assert round(mixed) - round(trained / 8) == r["dropped_informative"]


def test_the_service_backend_gives_the_same_run_as_in_process(tmp_path, backend):
    redis = EmbeddedRedis(tmp_path / "redis").start()
    port = free_port()
    proc = ServiceProcess(
        [
            "allocator",
            "--grpc-port",
            str(port),
            "--http-port",
            "0",
            "--redis-url",
            redis.url,
            "--half-life-steps",
            "20",
        ],
        f"127.0.0.1:{port}",
        tmp_path / "allocator.log",
    ).start(60)
    service = ServiceAllocator(f"127.0.0.1:{port}")
    try:
        cfg = replace(STATIC, steps=30, lr_shared=0.05, lr_own=0.2)
        for strategy in ("knapsack-paper", "knapsack-eb"):
            a = simulate(cfg, strategy, 5, backend)
            b = simulate(cfg, strategy, 5, service)
            assert a.rows == b.rows
            assert len({r["max_n"] for r in _steps(a)}) > 1
    finally:
        service.close()
        proc.stop()
        redis.stop()


def test_experiment_writes_results_and_resumes(tmp_path, capsys):
    out = tmp_path / "exp"
    args = [
        "experiment",
        "--steps",
        "30",
        "--seeds",
        "2",
        "--prompts",
        "128",
        "--heldout",
        "32",
        "--prompts-per-step",
        "16",
        "--eval-every",
        "5",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    names = [s["strategy"] for s in res["strategies"]]
    assert names == list(STRATEGIES)
    for s in res["strategies"]:
        assert len(s["effective_ratio"]["values"]) == 2
    uni = res["strategies"][0]
    # the uniform baseline ran 3x the budget, but the table compares at the equal budget
    rows = [
        json.loads(x)
        for x in (out / "runs/uniform-seed0/metrics.jsonl").read_text().split("\n")
        if x
    ]
    assert max(r["rollouts_total"] for r in rows) == 3 * 30 * 128
    within = RunCurves.from_rows("uniform", 0, rows).within(30 * 128)
    assert uni["effective_ratio"]["values"][0] == pytest.approx(effective_ratio(within))
    for png in ("effective_ratio.png", "heldout_vs_rollouts.png", "n_distribution.png"):
        assert (out / png).stat().st_size > 10_000
    md = (out / "results.md").read_text()
    assert "| knapsack-eb | 2 |" in md and "| knapsack-dapo | 2 |" in md
    assert "`krl experiment --steps 30 --seeds 2 --prompts 128" in md  # the exact command
    before = (out / "runs/dapo-seed1/metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(args) == 0  # again: nothing re-run
    assert capsys.readouterr().out.count("already done") == 2 * len(STRATEGIES)
    assert (out / "runs/dapo-seed1/metrics.jsonl").read_text() == before
    # a run made under another config is not this command's: refused, nothing touched
    longer = [a if a != "30" else "40" for a in args]
    assert longer.count("40") == 1
    assert main(longer) == 1
    err = capsys.readouterr().err
    assert f"{2 * len(STRATEGIES)} run folder(s) hold runs made with other settings" in err
    assert "steps (90 -> 120)" in err  # uniform's, at 3x the budget
    assert (out / "runs/dapo-seed1/metrics.jsonl").read_text() == before
    # another objective: the solved runs differ, uniform's and dapo's baselines do not
    assert main([*args, "--objective", "paper"]) == 1
    err = capsys.readouterr().err
    assert (
        f"{2 * (len(STRATEGIES) - 2)} run folder(s)" in err and "objective (None -> 'paper')" in err
    )
    assert "uniform-seed" not in err and "/dapo-seed" not in err


@pytest.mark.parametrize(
    "argv, word",
    [
        (["experiment", "--strategies", "uniform,greedy"], "unknown strategy"),
        (["experiment", "--task", "reverse"], "--task applies to --backend loop only"),
        (["experiment", "--backend", "loop", "--difficulty", "beta:1,1"], "--difficulty applies"),
        (["simulate", "--difficulty", "beta:1"], "beta:A,B"),
        (["simulate", "--min-n", "9"], "min_n"),
        (["experiment", "--seeds", "0,0"], "distinct"),
        (["experiment", "--baseline-factor", "0.5"], "--baseline-factor must be >= 1"),
    ],
)
def test_bad_flags_are_refused(argv, word, capsys, tmp_path):
    out = tmp_path / "x"
    try:
        code = main([*argv, *(["--out", str(out)] if argv[0] == "experiment" else [])])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    assert word in capsys.readouterr().err
    assert not (out / "runs").exists()  # nothing ran
