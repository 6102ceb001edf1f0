"""`krl experiment` skips finished runs and resumes unfinished ones in its --out folder; a run
folder made with other settings than the command's must be refused before anything runs, never
reported under this command's name (a loop experiment once reported runs of another
`--train-per-level` or `--objective` as "already done")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from krl.cli import build_parser, main
from krl.common.config import load_settings
from krl.common.flags import given
from krl.experiment.cli import _loop_settings, _sim_config
from krl.experiment.runner import Plan, _reused_runs, up_flags
from krl.trainer.settings import TrainerSettings, dump_settings
from krl.up import resolve_half_life

BASE = ["--steps", "20", "--seeds", "7,8", "--strategies", "uniform,knapsack-eb", "--threads", "1"]


def _experiment(argv: list[str]):
    args = build_parser().parse_args(["experiment", "--backend", "loop", *BASE, *argv])
    cfg = _sim_config(args)
    plan = Plan("loop", tuple(args.strategies), tuple(args.seeds), 20, cfg.budget, 1.0)
    return plan, _loop_settings(args, cfg)


def _saved_run(out: Path, argv: list[str], strategy: str) -> Path:
    """The run folder `krl up` leaves for one run of the experiment (its settings.json exactly
    as the trainer writes it)."""
    _, settings = _experiment(argv)
    folder = out / "runs" / f"{strategy}-seed7"
    flags = [*up_flags(settings), "--strategy", strategy, "--seed", "7", "--run-dir", str(folder)]
    up = build_parser().parse_args(["up", *flags])
    dump_settings(folder, load_settings(TrainerSettings, None, given(up, up.setting_names)))
    return folder


def test_the_same_command_finds_its_own_runs(tmp_path) -> None:
    argv = ["--train-per-level", "128", "--warmup-seed", "1"]
    for strategy in ("uniform", "knapsack-eb"):
        _saved_run(tmp_path, argv, strategy)
    plan, settings = _experiment(argv)
    assert plan.seeds == (7, 8)
    assert _reused_runs(tmp_path, plan, settings) == []
    plan, settings = _experiment(["--train-per-level", "128"])  # the check does look
    assert len(_reused_runs(tmp_path, plan, settings)) == 2
    # the trainer's default spelt out is the same run as the default left out
    plan, settings = _experiment(["--train-per-level", "128", "--warmup-seed", "1", "--lr", "2e-4"])
    assert TrainerSettings.model_fields["lr"].default == 2e-4
    assert _reused_runs(tmp_path, plan, settings) == []


def test_a_setting_left_to_its_default_is_a_difference_too(tmp_path) -> None:
    for strategy in ("uniform", "knapsack-eb"):
        _saved_run(tmp_path, ["--train-per-level", "128"], strategy)
    plan, settings = _experiment([])
    found = dict(_reused_runs(tmp_path, plan, settings))
    default = TrainerSettings.model_fields["train_per_level"].default
    assert found == {
        tmp_path / "runs" / name: [f"train_per_level (128 -> {default!r})"]
        for name in ("uniform-seed7", "knapsack-eb-seed7")
    }


def test_a_baseline_is_shared_across_objectives_but_a_solved_run_is_not(tmp_path) -> None:
    for strategy in ("uniform", "knapsack-eb"):
        _saved_run(tmp_path, [], strategy)
    plan, settings = _experiment(["--objective", "paper"])
    found = dict(_reused_runs(tmp_path, plan, settings))
    assert found == {tmp_path / "runs/knapsack-eb-seed7": ["objective (None -> 'paper')"]}
    plan, settings = _experiment(["--min-n", "4"])  # a floor on n: the solve's, not uniform's
    found = dict(_reused_runs(tmp_path, plan, settings))
    assert found == {tmp_path / "runs/knapsack-eb-seed7": ["min_n (2 -> 4)"]}
    # krl up's allocator step half-life (its up.json; a run without one had it off)
    plan, settings = _experiment([])
    found = dict(_reused_runs(tmp_path, plan, settings, half_life_steps=5.0))
    assert found == {tmp_path / "runs/knapsack-eb-seed7": ["half_life_steps (0.0 -> 5.0)"]}
    resolve_half_life(tmp_path / "runs/knapsack-eb-seed7", False, 5.0)  # as a fresh krl up does
    assert _reused_runs(tmp_path, plan, settings, half_life_steps=5.0) == []


def test_the_command_stops_before_any_run_and_touches_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "exp"
    folders = [_saved_run(out, ["--eval-per-level", "64"], s) for s in ("uniform", "knapsack-eb")]
    before = {f: (f / "settings.json").read_text() for f in folders}
    argv = ["experiment", "--backend", "loop", *BASE, "--eval-per-level", "32", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "2 run folder(s) hold runs made with other settings" in err
    assert "eval_per_level (64 -> 32)" in err and "use another --out" in err
    for f in folders:  # no krl up was started in them
        assert sorted(p.name for p in f.iterdir()) == ["settings.json"]
        assert (f / "settings.json").read_text() == before[f]
    assert not (out / "results.md").exists()
    json.loads(before[folders[0]])  # still the trainer's file


def test_krl_up_keeps_the_half_life_a_run_started_with(tmp_path) -> None:
    run = tmp_path / "run"
    assert resolve_half_life(run, False, None) == 0.0
    assert json.loads((run / "up.json").read_text()) == {"half_life_steps": 0.0}
    assert resolve_half_life(run, False, 7.0) == 7.0  # a fresh start writes its own
    assert resolve_half_life(run, True, None) == 7.0
    assert resolve_half_life(run, True, 7) == 7.0
    with pytest.raises(ValueError, match=r"half_life_steps \(7.0 -> 3.0\)"):
        resolve_half_life(run, True, 3.0)
    assert json.loads((run / "up.json").read_text()) == {"half_life_steps": 7.0}
    old = tmp_path / "old"  # a run from before up.json: resumed with what it is given
    assert resolve_half_life(old, True, None) == 0.0
