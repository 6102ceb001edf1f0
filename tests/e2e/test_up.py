"""`krl up` as a user runs it: four processes, a run folder with plots and a summary, Ctrl-C
that checkpoints and stops every child, and `--resume` that finishes the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from krl.rl.rows import undeclared
from krl.rl.runlog import read_rows

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FLAGS = [
    "--prompts-per-step",
    "16",
    "--rollouts-per-prompt",
    "4",
    "--warmup-steps",
    "30",
    "--eval-every",
    "2",
    "--max-new-tokens",
    "16",
]


def _up(run: Path, cache: Path, *extra: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "KRL_TRAINER_CACHE_DIR": str(cache),
        "KRL_TRAINER_TRAIN_PER_LEVEL": "8",
        "KRL_TRAINER_EVAL_PER_LEVEL": "4",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "krl.cli", "up", "--run-dir", str(run), *FLAGS, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )


def _children_gone(run: Path) -> None:
    """No process of this run is left: no krl service and no redis-server on its socket."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(run) not in out, [line for line in out.splitlines() if str(run) in line]


def test_up_runs_the_loop_and_writes_the_run_folder(tmp_path):
    run = tmp_path / "up-run"
    proc = _up(run, tmp_path / "cache", "--steps", "3")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    for name in (
        "metrics.jsonl",
        "summary.md",
        "summary.json",
        "reward.png",
        "heldout_accuracy.png",
        "effective_ratio.png",
        "n_per_prompt.png",
        "allocations.jsonl",
        "settings.json",
    ):
        assert (run / name).is_file(), name
    for svc in ("allocator", "rollout", "trainer"):
        assert (run / "logs" / f"{svc}.log").stat().st_size > 0
    rows = read_rows(run / "metrics.jsonl")
    assert {r["kind"] for r in rows} == {"step", "eval"}
    assert not [undeclared(r) for r in rows if undeclared(r)]  # every key is in krl.rl.rows
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and summary["rollouts"] == 3 * 16 * 4
    assert "held-out greedy accuracy" in out and "step 3/3" in out
    # progress lines only: events in words, no raw JSON log lines (they go to logs/)
    assert "finished at step 3" in out and "checkpoint at step 3" in out, out
    assert not [line for line in out.splitlines() if '{"' in line], out
    _children_gone(run)
    # a second `up` on the same folder is refused before anything starts
    again = _up(run, tmp_path / "cache", "--steps", "3")
    out2, _ = again.communicate(timeout=60)
    assert again.returncode == 2 and "already holds a run" in out2


def test_ctrl_c_checkpoints_stops_everything_and_resume_finishes(tmp_path):
    run = tmp_path / "up-stop"
    # enough steps that the stop lands mid-run even on a loaded machine (12 were once done
    # before the SIGINT took effect)
    proc = _up(
        run,
        tmp_path / "cache",
        "--steps",
        "30",
        "--checkpoint-every",
        "0",
        "--half-life-steps",
        "7",
    )
    deadline = time.monotonic() + 300
    while not [r for r in read_rows(run / "metrics.jsonl") if r.get("kind") == "step"]:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert "continue with: krl up --resume" in out, out
    latest = (run / "checkpoints" / "latest").read_text()
    stopped_at = json.loads((run / "checkpoints" / latest / "state.json").read_text())["step"]
    assert 1 <= stopped_at < 30
    _children_gone(run)
    # the allocator's step half-life is the run's too: another is refused, none keeps its own
    other = _up(run, tmp_path / "cache", "--resume", "--steps", "30", "--half-life-steps", "3")
    out, _ = other.communicate(timeout=60)
    assert other.returncode == 2 and "half_life_steps (7.0 -> 3.0)" in out, out
    proc = _up(run, tmp_path / "cache", "--resume", "--steps", "30")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    started = [
        ln
        for ln in (run / "logs/allocator.log").read_text().splitlines()
        if "allocator settings" in ln
    ]
    assert len(started) == 2 and all('"half_life_steps": 7.0' in ln for ln in started)
    steps = [r["step"] for r in read_rows(run / "metrics.jsonl") if r["kind"] == "step"]
    assert steps == list(range(1, 31))


def test_a_killed_up_leaves_no_service_running(tmp_path):
    """`krl up` SIGKILLed mid-run (no chance to stop its children): the allocator, the rollout
    service (whose command line does not name the run), its scoring workers, the trainer and
    the redis-server all die with it."""
    import psutil

    run = tmp_path / "up-kill"
    proc = _up(run, tmp_path / "cache", "--steps", "200")
    deadline = time.monotonic() + 300
    while not [r for r in read_rows(run / "metrics.jsonl") if r.get("kind") == "step"]:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 4, children  # redis, allocator, rollout (+ workers), trainer
    proc.kill()
    proc.communicate(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, [" ".join(p.cmdline()) for p in alive]
    _children_gone(run)


def test_a_service_that_dies_mid_run_stops_the_run_at_once(tmp_path):
    """The allocator SIGKILLed mid-run: `krl up` names it, shows the end of its log, stops the
    trainer within seconds (not after its client's minutes of retries), leaves no process, and
    the run resumes from its last checkpoint."""
    import psutil

    run = tmp_path / "up-dead"
    proc = _up(run, tmp_path / "cache", "--steps", "200", "--checkpoint-every", "1")
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "latest").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    allocator = next(
        p
        for p in psutil.Process(proc.pid).children(recursive=True)
        if "allocator" in p.cmdline() and "krl.cli" in p.cmdline()
    )
    allocator.kill()
    killed = time.monotonic()
    out, _ = proc.communicate(timeout=120)
    assert time.monotonic() - killed < 45, out
    assert proc.returncode == 1, out
    assert "the allocator was killed by signal 9 while the trainer was running" in out, out
    assert f"the end of {run / 'logs' / 'allocator.log'}" in out, out
    assert "continue with: krl up --resume" in out, out
    _children_gone(run)
    steps = [r["step"] for r in read_rows(run / "metrics.jsonl") if r["kind"] == "step"]
    assert 1 <= len(steps) < 200
    again = _up(run, tmp_path / "cache", "--resume", "--steps", str(max(steps) + 2))
    out, _ = again.communicate(timeout=400)
    assert again.returncode == 0, out
    assert "resumed at step" in out, out
