"""Short real training runs through all three services: a real redis-server, `krl allocator`,
`krl rollout` (hf engine, tiny model) and `krl trainer` as separate processes on loopback.

Checks that outcomes reach Redis exactly once, that allocations follow the histories, that the
policy moves, that the control API works, and that restarts of the allocator, of the rollout
service and of the trainer itself (from its checkpoint) lose and double-count nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from krl.api.trainer.v1 import trainer_pb2 as tpb
from krl.api.trainer.v1 import trainer_pb2_grpc as tpb_grpc
from krl.clients.rollout import RolloutClient
from krl.common.procs import ServiceProcess, free_port
from krl.common.redis_server import EmbeddedRedis
from krl.rl.data import EpochSampler
from krl.rl.runlog import read_rows
from krl.tasks.reverse import ReverseSource
from krl_client import AllocatorClient

pytestmark = [pytest.mark.slow, pytest.mark.integration]

M, PER_LEVEL = 16, 8  # 48 training prompts: an epoch is 3 steps, so histories get revisited
TRAIN = [
    "--prompts-per-step",
    str(M),
    "--rollouts-per-prompt",
    "4",
    "--max-n",
    "16",
    "--warmup-steps",
    "60",
    "--eval-every",
    "3",
    "--max-new-tokens",
    "16",
]


class Stack:
    def __init__(self, tmp: Path, model: Path) -> None:
        self.tmp = tmp
        self.model = model
        self.redis = EmbeddedRedis(tmp / "redis").start()
        self.a_port, self.r_port = free_port(), free_port()
        self.allocator = self._allocator().start(60)
        self.rollout = self._rollout().start(180)

    def _allocator(self) -> ServiceProcess:
        return ServiceProcess(
            [
                "allocator",
                "--grpc-port",
                str(self.a_port),
                "--http-port",
                "0",
                "--redis-url",
                self.redis.url,
            ],
            f"127.0.0.1:{self.a_port}",
            self.tmp / "allocator.log",
        )

    def _rollout(self) -> ServiceProcess:
        return ServiceProcess(
            [
                "rollout",
                "--grpc-port",
                str(self.r_port),
                "--http-port",
                "0",
                "--model",
                str(self.model),
                "--max-n",
                "64",
            ],
            f"127.0.0.1:{self.r_port}",
            self.tmp / "rollout.log",
            env={"KRL_ROLLOUT_GRACE_S": "0.5"},
        )

    def restart_allocator(self) -> None:
        self.allocator.proc.kill()
        self.allocator.proc.wait()
        self.allocator = self._allocator().start(60)

    def restart_rollout(self) -> None:
        self.rollout.proc.kill()  # its engine worker notices its parent is gone and exits
        self.rollout.proc.wait()
        self.rollout = self._rollout().start(180)

    def trainer(self, run_dir: Path, *extra: str, cache: Path) -> tuple[subprocess.Popen, str, str]:
        g, h = free_port(), free_port()
        args = [
            sys.executable,
            "-m",
            "krl.cli",
            "trainer",
            "--run-dir",
            str(run_dir),
            "--allocator",
            f"127.0.0.1:{self.a_port}",
            "--rollout",
            f"127.0.0.1:{self.r_port}",
            "--grpc-port",
            str(g),
            "--http-port",
            str(h),
            *TRAIN,
            *extra,
        ]
        env = {
            **os.environ,
            "KRL_TRAINER_CACHE_DIR": str(cache),
            "KRL_TRAINER_TRAIN_PER_LEVEL": str(PER_LEVEL),
            "KRL_TRAINER_EVAL_PER_LEVEL": "8",
            "KRL_TRAINER_CLIENT_BACKOFF_S": "0.2",
        }
        log = open(run_dir.parent / f"{run_dir.name}-trainer.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return proc, f"127.0.0.1:{g}", f"http://127.0.0.1:{h}"

    def stop(self) -> None:
        for p in (self.rollout, self.allocator):
            p.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from krl.model.tiny import build_tiny_model

    tmp = tmp_path_factory.mktemp("stack")
    s = Stack(tmp, build_tiny_model(tmp / "served-model", seed=7))
    s.cache = tmp / "cache"
    yield s
    s.stop()


def _steps(run_dir: Path) -> list[dict]:
    return [r for r in read_rows(run_dir / "metrics.jsonl") if r["kind"] == "step"]


def _wait_step(run_dir: Path, proc: subprocess.Popen, step: int, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = _steps(run_dir)
        if rows and rows[-1]["step"] >= step:
            return
        assert proc.poll() is None, f"trainer exited with {proc.returncode}"
        time.sleep(0.1)
    raise TimeoutError(f"step {step} not reached")


def _journal(path: Path) -> list[dict]:
    """A journal's allocations in order, after checking each was marked reported once."""
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    plans = [r for r in rows if "n" in r]
    marks = [r["step"] for r in rows if r.get("reported")]
    assert sorted(marks) == [p["step"] for p in plans], (marks, [p["step"] for p in plans])
    return plans


def _redis_trials(stack: Stack, namespace: str) -> tuple[int, list]:
    ids = [t.id for t in ReverseSource(seed=0, train_per_level=PER_LEVEL).train]
    with AllocatorClient(f"127.0.0.1:{stack.a_port}", namespace) as c:
        stats = c.prompt_stats(ids)
    return sum(s.trials for s in stats), stats


def _check_exactly_once(stack: Stack, run_dir: Path, steps: int) -> list[dict]:
    rows = _steps(run_dir)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # each step once
    trials, _ = _redis_trials(stack, run_dir.name)
    assert trials == sum(r["rollouts"] for r in rows)  # nothing lost, nothing counted twice
    return rows


def test_a_short_run_trains_reports_and_allocates_from_histories(stack, tmp_path):
    run = tmp_path / "e2e-default"
    proc, _, _ = stack.trainer(run, "--steps", "6", "--checkpoint-every", "3", cache=stack.cache)
    assert proc.wait(timeout=400) == 0, (run.parent / "e2e-default-trainer.log").read_text()[-3000:]
    rows = _check_exactly_once(stack, run, 6)
    assert all(r["reported"] == r["prompts"] and r["report_duplicates"] == 0 for r in rows)

    # the first epoch: no history, every prompt alike -> 4 each; afterwards the histories
    # make the allocation uneven (same budget)
    first = _journal(run / "allocations.jsonl")
    assert all(set(a["n"].values()) == {4} for a in first[:3])
    later = [a["n"] for a in first[3:]]
    assert any(len(set(n.values())) > 1 for n in later)
    assert all(sum(n.values()) == M * 4 for n in later)
    _, stats = _redis_trials(stack, run.name)
    by_id = {s.prompt_id: s for s in stats}
    for n in later:  # a prompt all-correct on its visit gets no more than one with mixed results
        solved = [n[p] for p in n if by_id[p].last_successes == by_id[p].last_trials]
        mixed = [n[p] for p in n if 0 < by_id[p].last_successes < by_id[p].last_trials]
        if solved and mixed:
            assert max(solved) <= max(mixed)

    # the policy moved: non-zero losses, weights differ from the warm start, versions pushed
    assert any(r["loss"] not in (None, 0.0) for r in rows)
    assert sum(r["trained_sequences"] for r in rows) > 0
    from krl.model.loading import load_model

    warm = next(stack.cache.glob("tiny-warm-*"))
    final = run / "checkpoints" / (run / "checkpoints" / "latest").read_text()
    a, b = load_model(warm).state_dict(), load_model(final).state_dict()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) > 1e-4
    with RolloutClient(f"127.0.0.1:{stack.r_port}") as rc:
        assert rc.info().policy_version >= 7  # the warm start + one push per step
    evals = [r for r in read_rows(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert [e["step"] for e in evals] == [0, 3, 6]
    assert set(evals[0]["accuracy"]) == {"all", "L1", "L2", "L3", "L4", "L5", "L6"}


@pytest.mark.parametrize("strategy", ["dapo", "knapsack-dapo"])
def test_dapo_fills_batches_with_informative_groups_and_stops_at_the_budget(
    stack, tmp_path, strategy
):
    """dapo: uniform groups; knapsack-dapo: each round allocated by the eb knapsack. Both
    keep the informative groups, round after round, and stop at the equal-compute budget."""
    run = tmp_path / f"e2e-{strategy}"
    budget = 7 * M * 4  # seven batches of M prompts x 4
    proc, _, _ = stack.trainer(
        run,
        "--strategy",
        strategy,
        "--steps",
        "100",
        "--rollout-budget",
        str(budget),
        "--dapo-max-rounds",
        "3",
        cache=stack.cache,
    )
    log = run.parent / f"e2e-{strategy}-trainer.log"
    assert proc.wait(timeout=400) == 0, log.read_text()[-3000:]
    rows = _steps(run)
    assert rows[-1]["rollouts_total"] == budget  # rounds stop at the equal-compute budget
    assert len(rows) < 7 and sum(r["rounds"] for r in rows) == 7  # fewer updates than batches
    for r in rows:
        assert 1 <= r["rounds"] <= 3 and r["rollouts"] == r["rounds"] * M * 4
        # the ratio counts the rollouts actually trained on
        assert r["effective_rollout_ratio"] == pytest.approx(r["trained_sequences"] / r["rollouts"])
        if strategy == "dapo":
            assert r["trained_sequences"] <= M * 4  # at most M groups of 4
            if r["rounds"] < 3 and r is not rows[-1]:
                assert r["trained_sequences"] == M * 4  # a batch stops as soon as it is full
    # every generated group was reported once, under one allocation per batch
    journal = _journal(run / "allocations.jsonl")
    assert [j["step"] for j in journal] == list(range(1, 8))
    sampler = EpochSampler(
        [t.id for t in ReverseSource(seed=0, train_per_level=PER_LEVEL).train], M, 0
    )
    assert [list(j["n"]) for j in journal] == [sampler.batch(b) for b in range(7)]
    trials, _ = _redis_trials(stack, run.name)
    assert trials == budget
    state = json.loads(
        (
            run / "checkpoints" / (run / "checkpoints" / "latest").read_text() / "state.json"
        ).read_text()
    )
    assert state["batches"] == 7 and state["rollouts"] == budget and state["step"] == len(rows)
    evals = [r for r in read_rows(run / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals[-1]["rollouts_total"] == budget


def test_probe_allocates_first_visits_from_their_probe_and_counts_each_rollout_once(
    stack, tmp_path
):
    """knapsack-probe: each step a uniform probe (4 of the 8 per prompt), reported, then the
    whole budget again over the same prompts with n >= 4 from what the probe showed: uneven
    already in the first epoch, where no prompt has a history of its own. (token-mean, whose
    objective sqrt-gradient splits unevenly on any spread of outcomes; group-gradient may find
    the even split best on a hard batch.)"""
    run = tmp_path / "e2e-probe"
    proc, _, _ = stack.trainer(
        run,
        *("--strategy", "knapsack-probe", "--rollouts-per-prompt", "8", "--steps", "4"),
        *("--eval-every", "0", "--loss-agg", "token-mean"),
        cache=stack.cache,
    )
    assert proc.wait(timeout=400) == 0, (run.parent / "e2e-probe-trainer.log").read_text()[-3000:]
    rows = _check_exactly_once(stack, run, 4)
    probes = _journal(run / "allocations.jsonl")
    full = _journal(run / "topups.jsonl")
    assert [j["step"] for j in probes] == [j["step"] for j in full] == [1, 2, 3, 4]
    for a, b, r in zip(probes, full, rows, strict=True):
        assert set(a["n"].values()) == {4} and list(a["n"]) == list(b["n"])
        assert min(b["n"].values()) >= 4 and sum(b["n"].values()) == M * 8 == r["rollouts"]
        topped = sum(1 for n in b["n"].values() if n > 4)  # a probe report and a top-up's
        assert r["reported"] == M + topped and r["report_duplicates"] == 0
    assert any(len(set(b["n"].values())) > 1 for b in full[:3])  # the first epoch
    _, stats = _redis_trials(stack, run.name)
    by_id = {s.prompt_id: s for s in stats}
    for p, n in full[0]["n"].items():  # visited once (step 1) until step 4 revisits 16
        if p not in full[3]["n"]:
            assert by_id[p].trials == n and by_id[p].visits == (2 if n > 4 else 1)


def test_control_api_and_prometheus_metrics(stack, tmp_path):
    run = tmp_path / "e2e-control"
    proc, target, http = stack.trainer(
        run,
        "--steps",
        "200",
        "--strategy",
        "knapsack-paper",
        "--checkpoint-every",
        "0",
        cache=stack.cache,
    )
    try:
        _wait_step(run, proc, 1)
        text = urllib.request.urlopen(f"{http}/metrics", timeout=5).read().decode()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        assert fams["krl_trainer_step"].samples[0].value >= 1
        assert fams["krl_trainer_rollouts"].samples[0].value >= M * 4  # counter "_total"
        assert "krl_trainer_effective_rollout_ratio" in fams
        phases = {s.labels["phase"] for s in fams["krl_trainer_phase_seconds"].samples}
        assert {"allocate", "generate", "train", "weight_sync"} <= phases
        with grpc.insecure_channel(target) as ch:
            stub = tpb_grpc.TrainerServiceStub(ch)
            st = stub.GetStatus(tpb.GetStatusRequest(), timeout=5)
            assert st.strategy == "knapsack-paper" and st.namespace == run.name
            assert st.state == tpb.TRAINER_STATE_RUNNING and st.total_steps == 200
            stub.PauseTraining(tpb.PauseTrainingRequest(), timeout=5)
            deadline = time.monotonic() + 60
            while (
                stub.GetStatus(tpb.GetStatusRequest(), timeout=5).state != tpb.TRAINER_STATE_PAUSED
            ):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            at = stub.GetStatus(tpb.GetStatusRequest(), timeout=5).step
            time.sleep(1.0)
            assert stub.GetStatus(tpb.GetStatusRequest(), timeout=5).step == at  # paused
            saved = stub.SaveCheckpoint(tpb.SaveCheckpointRequest(), timeout=60)
            assert saved.step == at and Path(saved.path).is_dir()
            stub.ResumeTraining(tpb.ResumeTrainingRequest(), timeout=5)
            _wait_step(run, proc, at + 1)
            stub.StopTraining(tpb.StopTrainingRequest(checkpoint=True), timeout=5)
        assert proc.wait(timeout=120) == 0
        state = json.loads(
            (
                run / "checkpoints" / (run / "checkpoints" / "latest").read_text() / "state.json"
            ).read_text()
        )
        assert state["step"] == _steps(run)[-1]["step"] > at
    finally:
        if proc.poll() is None:
            proc.kill()


def test_allocator_and_rollout_restarts_lose_and_double_count_nothing(stack, tmp_path):
    run = tmp_path / "e2e-faults"
    steps = 14  # room after the restarts: a trainer done before one would test nothing
    proc, _, _ = stack.trainer(
        run, "--steps", str(steps), "--checkpoint-every", "0", cache=stack.cache
    )
    try:
        _wait_step(run, proc, 2)
        stack.restart_allocator()
        _wait_step(run, proc, 4)
        stack.restart_rollout()  # comes back with its own weights (version 0)
        at = _steps(run)[-1]["step"]
        assert at < steps, f"the trainer reached step {at} before the rollout service was back"
        assert proc.wait(timeout=400) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    _check_exactly_once(stack, run, steps)
    # The restarted rollout service came back with its own weights (version 0) and must end
    # with ours: by a re-push after FAILED_PRECONDITION ("pushing them again") when a Generate
    # hit it first, or by the step's regular push when the restart fell between generate and
    # push (timing decides which; both are correct).
    ckpt = run / "checkpoints" / (run / "checkpoints" / "latest").read_text()
    state = json.loads((ckpt / "state.json").read_text())
    with RolloutClient(f"127.0.0.1:{stack.r_port}") as rc:
        assert rc.info().policy_version == state["policy_version"] > 0


def test_a_killed_trainer_resumes_with_the_same_data_order_and_no_double_count(stack, tmp_path):
    run = tmp_path / "e2e-resume"
    proc, target, _ = stack.trainer(
        run, "--steps", "7", "--checkpoint-every", "0", cache=stack.cache
    )
    try:
        _wait_step(run, proc, 2)
        with grpc.insecure_channel(target) as ch:
            saved = tpb_grpc.TrainerServiceStub(ch).SaveCheckpoint(
                tpb.SaveCheckpointRequest(), timeout=120
            )
        _wait_step(run, proc, saved.step + 1)  # at least one reported step after it: redone
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    first_run = {r["step"]: r for r in _steps(run)}
    proc, _, _ = stack.trainer(run, "--resume", "--steps", "7", cache=stack.cache)
    assert proc.wait(timeout=400) == 0, (run.parent / "e2e-resume-trainer.log").read_text()[-3000:]
    rows = _check_exactly_once(stack, run, 7)
    redone = [r for r in rows if r["replayed"]]
    assert redone and min(r["step"] for r in redone) == saved.step + 1
    for r in redone:
        assert r["reported"] + r["report_duplicates"] == r["prompts"]
        if r["step"] in first_run:  # reported before the kill: the redo is not counted again
            assert r["report_duplicates"] == r["prompts"]
            assert r["allocation_id"] == first_run[r["step"]]["allocation_id"]
    assert all(not r["replayed"] for r in rows if r["step"] > max(r["step"] for r in redone))
    # the data order is the uninterrupted one
    journal = _journal(run / "allocations.jsonl")
    assert sorted(j["step"] for j in journal) == list(range(1, 8))
    sampler = EpochSampler(
        [t.id for t in ReverseSource(seed=0, train_per_level=PER_LEVEL).train], M, seed=0
    )
    for j in journal:
        assert list(j["n"]) == sampler.batch(j["step"] - 1)
    events = read_rows(run / "events.jsonl")
    assert any(e["event"] == "resumed" and e["step"] == saved.step for e in events)
