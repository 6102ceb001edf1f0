"""The trainer's pure parts: batch statistics, the data order, strategies and the allocation
journal, checkpoints, settings and run-folder checks, the run log, plots and summary."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from krl.rl.data import EpochSampler
from krl.rl.runlog import RunLog, Tail, read_rows
from krl.rl.strategies import SOLVED, STRATEGIES, Strategy, parse_strategy, strategy_args
from krl.tasks.reverse import ReverseSource
from krl.trainer import checkpoint as ckpt
from krl.trainer.report import PLOTS, plot_run, summarize
from krl.trainer.settings import TrainerSettings, resolve_run
from krl.trainer.stats import GroupOutcome, accuracy_by_level, batch_stats
from krl_client.session import Journal


def test_batch_stats_by_hand():
    groups = [
        GroupOutcome(8, 8),
        GroupOutcome(4, 0),
        GroupOutcome(2, 1),
        GroupOutcome(10, 3),
        GroupOutcome(0, 0),
        GroupOutcome(1, 1),
    ]
    s = batch_stats(groups)
    assert s.prompts == 5 and s.zero_rollout_prompts == 1
    assert s.rollouts == 25
    assert s.effective_rollout_ratio == pytest.approx(12 / 25)  # groups of 2 and 10 are mixed
    assert s.effective_prompt_ratio == pytest.approx(2 / 5)
    assert s.all_correct == pytest.approx(2 / 5)  # 8/8 and 1/1 (a group of one has no variance)
    assert s.all_wrong == pytest.approx(1 / 5)
    assert s.success_rate == pytest.approx(13 / 25)
    assert s.max_n == 10


def test_accuracy_by_level():
    acc = accuracy_by_level(
        {"a": True, "b": False, "c": True, "d": True}, {"a": 1, "b": 1, "c": 2, "d": None}
    )
    assert acc == {"all": 0.75, "L1": 0.5, "L2": 1.0}


def test_reverse_task_is_deterministic_graded_and_held_out_is_disjoint():
    a, b = ReverseSource(seed=3), ReverseSource(seed=3)
    assert [t.id for t in a.train] == [t.id for t in b.train]
    assert {t.prompt for t in a.train}.isdisjoint({t.prompt for t in a.heldout})
    t = a.train[0]
    assert t.prompt == f"rev({t.answer[::-1]})=" and t.level == 1 and len(t.answer) == 3
    assert a.levels() == [1, 2, 3, 4, 5, 6]
    assert ReverseSource(seed=4).train[0].prompt != t.prompt


def test_data_order_is_a_pure_function_of_seed_and_step():
    ids = [f"p{i}" for i in range(50)]
    s1, s2 = EpochSampler(ids, 8, seed=1), EpochSampler(ids, 8, seed=1)
    order = [s1.batch(k) for k in range(20)]
    assert [s2.batch(k) for k in reversed(range(20))] == order[::-1]  # any access order
    assert s1.per_epoch == 6
    for b in order:
        assert len(b) == 8 and len(set(b)) == 8
    epoch0 = [x for b in order[:6] for x in b]
    assert len(set(epoch0)) == 48  # one epoch: no prompt twice, the last 2 dropped
    assert order[6:12] != order[:6]  # a new permutation each epoch
    assert EpochSampler(ids, 8, seed=2).batch(0) != order[0]
    assert s1.cursor(7) == (1, 8)
    with pytest.raises(ValueError, match="fewer than a batch"):
        EpochSampler(ids[:3], 8, seed=0)


def test_strategies_share_one_code_path():
    assert strategy_args("knapsack-eb", 512, 64, 2, 64) == {
        "mode": "eb",
        "min_n": 2,
        "max_n": 64,
    }
    assert strategy_args("knapsack-paper", 512, 64, 2, 64)["mode"] == "paper"
    assert strategy_args("uniform", 512, 64, 2, 64) == {"mode": "uniform", "min_n": 8, "max_n": 8}
    assert strategy_args("uniform", 100, 64, 2, 64) == {"mode": "uniform", "min_n": 1, "max_n": 2}
    assert strategy_args("dapo", 512, 64, 2, 64) == strategy_args("uniform", 512, 64, 2, 64)
    with pytest.raises(ValueError):
        strategy_args("greedy", 512, 64, 2, 64)


class _FakeAllocator:
    """Counts Allocate calls; stands in only for the journal's replay logic (the real
    allocator is exercised by the integration and e2e tests)."""

    def __init__(self) -> None:
        self.calls = 0

    def allocate(self, prompt_ids, budget, **kw):
        self.calls += 1
        from krl_client import Allocation

        return Allocation(
            f"{self.calls:032x}", {p: 2 for p in prompt_ids}, {}, 0.0, 0.1, budget, 0.0
        )


def test_journal_replays_a_redone_step_instead_of_allocating_again(tmp_path):
    from krl.rl.data import EpochSampler
    from krl.rl.step import StepRounds

    fake = _FakeAllocator()
    rounds = StepRounds(fake, None, EpochSampler(list("abcd"), 2, 0), "knapsack-eb", 4, 2, 8)
    j = Journal(tmp_path / "allocations.jsonl")

    def plan(journal, step, ids):
        return rounds.session(journal, len(ids), "knapsack-eb", 4, 2).allocate(step, ids, 4)

    p1 = plan(j, 1, ["a", "b"])
    assert fake.calls == 1 and not p1.replayed
    again = Journal(tmp_path / "allocations.jsonl")  # a restarted trainer
    p1b = plan(again, 1, ["a", "b"])
    assert fake.calls == 1 and p1b.replayed and p1b.allocation_id == p1.allocation_id
    assert p1b.n == {"a": 2, "b": 2}
    with pytest.raises(ValueError, match="belongs to another run"):
        plan(again, 1, ["b", "c"])
    plan(again, 2, ["c", "d"])
    assert fake.calls == 2


def _tiny(tmp_path: Path):
    from krl.model.loading import load_model, load_tokenizer
    from krl.model.tiny import TinyShape, build_tiny_model

    f = build_tiny_model(
        tmp_path / "m", TinyShape(hidden_size=32, num_hidden_layers=1, intermediate_size=64)
    )
    return load_model(f), load_tokenizer(f)


def test_checkpoint_round_trip_restores_model_optimiser_and_rngs(tmp_path):
    model, tok = _tiny(tmp_path)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[5, 6, 7]])).logits.sum().backward()
    opt.step()
    root = tmp_path / "ck"
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    paths = [
        ckpt.save(root, model, tok, opt, ckpt.TrainerState(s, s + 1, (0, s * 8), 0, "ns"), keep=2)
        for s in (1, 2, 3)
    ]
    expect = (random.random(), np.random.rand(), torch.rand(1).item())
    assert not paths[0].exists() and paths[1].exists()  # only the newest two kept
    assert ckpt.latest(root) == paths[2]
    st = ckpt.load_state(paths[2])
    assert (st.step, st.policy_version, st.cursor, st.namespace) == (3, 4, (0, 24), "ns")
    from krl.model.loading import load_model

    m2 = load_model(paths[2])
    for a, b in zip(model.state_dict().values(), m2.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    ckpt.load_trainer_parts(paths[2], opt2)
    assert opt2.state_dict()["state"][0]["step"] == 1
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expect


def test_settings_errors_before_anything_starts(tmp_path):
    with pytest.raises(ValidationError, match="below M x min_n"):
        TrainerSettings(prompts_per_step=64, rollouts_per_prompt=1, min_n=2)
    with pytest.raises(ValidationError, match="strategy"):
        TrainerSettings(strategy="greedy")
    with pytest.raises(ValidationError, match="local HF model folder"):
        TrainerSettings(model=str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="unknown task"):
        TrainerSettings(task="chess")
    with pytest.raises(ValidationError, match="min_n"):
        TrainerSettings(min_n=9, max_n=4)
    with pytest.raises(ValidationError, match=r"client_max_backoff_s \(1.0\) is below"):
        TrainerSettings(client_backoff_s=2.0, client_max_backoff_s=1.0)
    assert TrainerSettings(strategy="uniform").budget == 512
    for bad in ({"probe_n": 8}, {"rollouts_per_prompt": 1, "min_n": 1}):
        with pytest.raises(ValidationError, match=r"probe_n \(\d+\) must be"):
            TrainerSettings(strategy="knapsack-probe", **bad)
    assert TrainerSettings(strategy="knapsack-probe").probe_rollouts == 4  # half of 8
    assert TrainerSettings(strategy="knapsack-probe", probe_n=3).probe_rollouts == 3


def test_run_folder_checks_and_resume_rules(tmp_path):
    run = tmp_path / "run"
    s = TrainerSettings(run_dir=run, lr=1e-3)
    assert resolve_run(s, {"run_dir", "lr"}) is s
    run.mkdir()
    (run / "settings.json").write_text(json.dumps(s.public_dict()))
    with pytest.raises(ValueError, match="already holds a run"):
        resolve_run(TrainerSettings(run_dir=run), {"run_dir"})
    # resume takes the saved settings; steps may change, lr may not
    r = resolve_run(
        TrainerSettings(run_dir=run, resume=True, steps=7), {"run_dir", "resume", "steps"}
    )
    assert r.lr == 1e-3 and r.steps == 7 and r.resume
    with pytest.raises(ValueError, match="lr"):
        resolve_run(TrainerSettings(run_dir=run, resume=True, lr=5e-4), {"run_dir", "resume", "lr"})
    with pytest.raises(ValueError, match="nothing to resume"):
        resolve_run(TrainerSettings(run_dir=tmp_path / "none", resume=True), {"run_dir"})


def _rows(n_steps: int) -> list[dict]:
    rows = [{"kind": "eval", "step": 0, "accuracy": {"all": 0.2, "L1": 0.5, "L2": 0.0}}]
    for k in range(1, n_steps + 1):
        rows.append(
            {
                "kind": "step",
                "step": k,
                "reward": k / n_steps,
                "rollouts": 16,
                "tokens": 40,
                "effective_rollout_ratio": 0.5,
                "effective_prompt_ratio": 0.4,
                "all_correct": 0.1,
                "all_wrong": 0.5,
                "max_n": 2 + k % 5,
                "n_counts": {"2": 4, str(2 + k % 5): 1},
                "t_allocate": 0.01,
                "t_generate": 0.5,
                "t_train": 0.3,
                "t_weight_sync": 0.02,
                "rollouts_per_s": 30.0,
            }
        )
        if k % 5 == 0:
            rows.append(
                {
                    "kind": "eval",
                    "step": k,
                    "accuracy": {"all": 0.2 + k / 100, "L1": 0.6, "L2": 0.1},
                }
            )
    return rows


def test_run_log_truncation_drops_only_later_steps(tmp_path):
    log = RunLog(tmp_path)
    for r in _rows(12):
        log.write(r)
    assert log.truncate_after(10) == 2  # the rows of steps 11 and 12
    left = read_rows(tmp_path / "metrics.jsonl")
    assert max(r["step"] for r in left) == 10
    assert [r["step"] for r in left if r["kind"] == "eval"] == [0, 5, 10]


def test_plots_and_summary_from_a_run_folder(tmp_path):
    log = RunLog(tmp_path)
    for r in _rows(30):
        log.write(r)
    (tmp_path / "settings.json").write_text(json.dumps({"strategy": "uniform", "task": "reverse"}))
    paths = plot_run(tmp_path)
    assert sorted(p.name for p in paths) == sorted(PLOTS)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
    s = summarize(tmp_path, wall_s=61.0)
    assert s["steps"] == 30 and s["rollouts"] == 480 and s["max_n"] == 6
    assert s["heldout_before"]["all"] == 0.2 and s["heldout_after"]["all"] == pytest.approx(0.5)
    md = (tmp_path / "summary.md").read_text()
    assert "| all | 20.0% | 50.0% |" in md and "uniform" in md


def test_a_one_step_run_plots_without_warnings(tmp_path):
    """A run stopped after its first step (a service died) still gets its plots, with no
    matplotlib warning about an empty axis range."""
    import warnings

    log = RunLog(tmp_path)
    for r in _rows(1):
        log.write(r)
    (tmp_path / "settings.json").write_text(json.dumps({"strategy": "uniform", "task": "reverse"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = plot_run(tmp_path)
    assert sorted(p.name for p in paths) == sorted(PLOTS)


def test_tail_returns_each_complete_line_once_and_survives_truncation(tmp_path):
    path = tmp_path / "m.jsonl"
    tail = Tail(path)
    assert tail.new_rows() == []
    path.write_text('{"step": 1}\n{"step": 2}\n{"ste')  # the last line is being written
    assert tail.new_rows() == [{"step": 1}, {"step": 2}]
    assert tail.new_rows() == []
    with path.open("a") as f:
        f.write('p": 3}\n')
    assert tail.new_rows() == [{"step": 3}]
    log = RunLog(tmp_path)
    log.metrics_path = path
    log.truncate_after(1)  # the file is replaced by a shorter one
    assert tail.new_rows() == [{"step": 1}]


def test_a_run_that_cannot_be_built_fails_with_its_reason(tmp_path):
    """TrainerRun serves control and status before its trainer exists; a run folder whose
    checkpoint is another run's fails the run (FAILED, the reason in status and events.jsonl)
    before any service is called."""
    from krl.trainer.build import TrainerRun
    from krl.trainer.control import FAILED, STARTING

    model, tok = _tiny(tmp_path)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    run_dir = tmp_path / "run"
    ckpt.save(
        run_dir / "checkpoints",
        model,
        tok,
        opt,
        ckpt.TrainerState(4, 5, (0, 8), 0, "other"),
        keep=1,
    )
    run = TrainerRun(TrainerSettings(run_dir=str(run_dir), namespace="mine", seed=0))
    assert run.control.state == STARTING and run.step == 0 and run.trainer is None
    with pytest.raises(RuntimeError, match="not built"):
        run.save_checkpoint()
    assert run.run() == FAILED
    assert run.control.state == FAILED and "belongs to another run" in run.control.error
    events = [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "failed" and "another run" in events[-1]["error"]


def test_strategies_are_one_enum_and_each_has_its_arguments():
    assert set(SOLVED) == set(Strategy) and list(STRATEGIES) == [s.value for s in Strategy]
    assert Strategy("knapsack-eb") is Strategy.KNAPSACK_EB and Strategy.UNIFORM == "uniform"
    with pytest.raises(ValueError, match="unknown strategy 'greedy': use one of uniform"):
        parse_strategy("greedy")


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_a_cuda_device_without_cuda_fails_the_run_before_the_warm_up(tmp_path):
    from krl.trainer.build import TrainerRun
    from krl.trainer.control import FAILED

    with pytest.raises(ValueError, match="device"):
        TrainerSettings(device="gpu0")
    run = TrainerRun(TrainerSettings(run_dir=str(tmp_path / "run"), device="cuda"))
    assert run.run() == FAILED and "no CUDA device" in run.control.error
    assert not (tmp_path / "run" / "checkpoints").exists()


def _warm_up_tiny(cache_dir: str) -> str:
    """One run's warm-up (a process of its own, as two parallel `krl up` runs are)."""
    from krl.tasks.reverse import ReverseSource
    from krl.trainer.policy import prepare_policy

    tasks = ReverseSource(train_per_level=8, heldout_per_level=2).train
    out = prepare_policy(
        "tiny",
        tasks=tasks,
        task_name="reverse",
        warmup_steps=3,
        warmup_lr=1e-3,
        seed=0,
        cache_dir=Path(cache_dir),
    )
    return str(out)


@pytest.mark.integration  # two processes: tens of seconds
def test_two_runs_warming_up_the_same_policy_at_once_both_get_a_whole_copy(tmp_path):
    """Parallel experiments warm up the same cached policy at the same time: each warm-up writes
    a folder of its own, the first to finish is kept, and both runs get a loadable model."""
    import multiprocessing

    from krl.model.loading import load_model

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        got = [Path(p) for p in pool.map(_warm_up_tiny, [str(tmp_path)] * 2)]
    assert got[0] == got[1] and (got[0] / "warmup.json").is_file()
    load_model(got[0])
    assert [p.name for p in tmp_path.iterdir()] == [got[0].name]  # no half-written folder left


def test_every_copy_of_the_strategy_list_names_exactly_the_declared_ones():
    """krl.rl.strategies declares the list; the Helm schema and values, the compose file and
    the README name it again for readers: each must name all of them."""
    import re

    root = Path(__file__).resolve().parents[2]
    schema = json.loads((root / "deploy/helm/knapsack-rl/values.schema.json").read_text())
    trainer = schema["properties"]["trainer"]["properties"]
    values = (root / "deploy/helm/knapsack-rl/values.yaml").read_text()
    compose = (root / "docker-compose.yml").read_text()
    readme = (root / "README.md").read_text()

    def named(text: str) -> set[str]:
        return {s for s in STRATEGIES if re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", text)}

    def line(text: str, start: str) -> str:
        return next(x for x in text.splitlines() if x.strip().startswith(start))

    copies = {
        "helm schema": set(trainer["strategy"]["enum"]),
        "helm values": named(line(values, "strategy:")),
        "compose": named(line(compose, "#   KRL_STRATEGY")),
        "README flag": named(re.search(r"`--strategy ([\w|-]+)`", readme).group(1)),
        "README env": named(line(readme, "| `KRL_STRATEGY`")),
    }
    for where, names in copies.items():
        assert names == set(STRATEGIES), where


def test_reward_success_trains_on_binary_rewards():
    """--reward success: each completion's reward becomes its success (1 or 0), so a partial
    credit never reaches the advantages; the default keeps the verifier's score."""
    from krl.clients.rollout import Completion, Group
    from krl.trainer.rollouts import binary

    scores = [(1.0, True), (0.75, True), (0.4, False), (0.0, False)]
    g = Group("p", 0, [Completion("x", [1], [0.0], r, ok, "stop") for r, ok in scores], 3, 0.1)
    flat = binary(g)
    assert [c.reward for c in flat.completions] == [1.0, 1.0, 0.0, 0.0]
    assert [c.success for c in flat.completions] == [True, True, False, False]
    assert [c.reward for c in g.completions] == [1.0, 0.75, 0.4, 0.0]  # the original untouched
    assert TrainerSettings().reward == "score"
    with pytest.raises(ValidationError, match="reward"):
        TrainerSettings(reward="partial")
