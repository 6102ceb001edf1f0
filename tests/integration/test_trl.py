"""TRL 1.16's GRPOTrainer, for real on CPU with the tiny model, taking its per-prompt group sizes
from a real allocator (krl_client.trl) and reporting back."""

import asyncio
import os
import random

import pytest

pytest.importorskip("trl", reason="trl is installed by `make venv` ([trl] extra)")
pytestmark = pytest.mark.integration

G = 8
RATES = [0.0, 0.0, 0.2, 0.4, 0.5, 0.6, 1.0, 1.0]  # each prompt's chance of a reward of 1


def _train(
    target: str,
    tmp_path,
    drop_pads: bool = False,
    steps: int = 8,
    namespace: str = "trl",
    group_by_n: bool | None = None,
) -> dict:
    os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from krl.model.loading import load_model, load_tokenizer
    from krl.model.tiny import build_tiny_model
    from krl_client import AllocationSession, AllocatorClient
    from krl_client.trl import KnapsackGRPO

    folder = build_tiny_model(tmp_path / "model")
    rows = [{"prompt": f"{i}+{i}=", "rate": r} for i, r in enumerate(RATES)]
    rng = random.Random(0)

    def success(prompts, completions, rate, **kw):
        assert len(prompts) == len(completions) == len(rate)  # the real rows only
        return [1.0 if rng.random() < r else 0.0 for r in rate]

    client = AllocatorClient(target, namespace=namespace)
    session = AllocationSession(
        client, budget_per_prompt=4, min_n=2, max_n=G, journal=tmp_path / "allocations.jsonl"
    )
    knap = KnapsackGRPO(session, [success], num_generations=G, group_by_n=group_by_n)
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        num_generations=G,
        per_device_train_batch_size=4 * G,
        max_steps=steps,
        max_completion_length=4,
        learning_rate=1e-4,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
        shuffle_dataset=True,
    )
    trainer = GRPOTrainer(
        model=load_model(folder),
        processing_class=load_tokenizer(folder),
        reward_funcs=knap.reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        rollout_func=knap.rollout_func,
    )
    if drop_pads:
        knap.drop_pads(trainer)
    in_loss: list = []  # (rows, advantages) of every batch the loss saw
    compute_loss = trainer.compute_loss

    def counted(model, inputs, *a, **kw):
        in_loss.append((int(inputs["completion_ids"].shape[0]), inputs["advantages"].tolist()))
        return compute_loss(model, inputs, *a, **kw)

    trainer.compute_loss = counted
    calls: list = []  # (num_generations, prompt rows) of every generation call
    generate = trainer._generate_single_turn

    def recorded(prompt_ids, *a):
        calls.append((a[-1], [tuple(p) for p in prompt_ids]))
        return generate(prompt_ids, *a)

    trainer._generate_single_turn = recorded
    trainer.train()
    advantages = list(trainer._logs["advantages"])[-4 * G :]
    stats = client.prompt_stats(sorted({p for plan in knap.plans for p in plan.n}))
    client.close()
    return {
        "knap": knap,
        "advantages": advantages,
        "stats": stats,
        "log": trainer.state.log_history,
        "loss_type": args.loss_type,
        "in_loss": in_loss,
        "calls": calls,
    }


async def test_grpo_trainer_runs_with_allocated_group_sizes(allocator, tmp_path):
    out = await asyncio.to_thread(_train, f"127.0.0.1:{allocator.grpc.port}", tmp_path)
    knap = out["knap"]
    assert len(knap.plans) == 8  # one allocation per generation round
    for plan, pads in zip(knap.plans, knap.pads, strict=True):
        assert sum(plan.n.values()) <= 16 and all(2 <= n <= G for n in plan.n.values())
        assert sum(pads) == 4 * G - plan.total  # a group = n real rows + G - n pads
    # the allocator learned from the reports: later rounds are not uniform
    assert any(len(set(p.n.values())) > 1 for p in knap.plans[4:])
    # the server saw exactly the real rollouts: pads are never reported
    per_prompt = {}
    for plan in knap.plans:
        for pid, n in plan.n.items():
            per_prompt[pid] = per_prompt.get(pid, 0) + n
    assert {s.prompt_id: s.trials for s in out["stats"]} == per_prompt
    # TRL gave the pads advantage 0 and left them out of the group baseline
    pads = knap.pads[-1]
    assert all(a == 0.0 for a, pad in zip(out["advantages"], pads, strict=True) if pad)
    assert any(a != 0.0 for a, pad in zip(out["advantages"], pads, strict=True) if not pad)
    assert "knapsack/effective_rollout_ratio" in knap.last_metrics
    # the adapter declared TRL's loss to the allocator (its loss_type, in our names)
    from krl_client.trl import LOSS_AGG_OF_TRL

    assert knap.session.loss_agg == LOSS_AGG_OF_TRL[out["loss_type"]]
    assert all("loss" in row for row in out["log"][:-1])


async def test_dropped_pads_never_reach_the_loss(allocator, tmp_path):
    """With drop_pads the loss sees exactly the real rollouts of each round, and the real rows'
    advantages are those the padded batch gives them (same seed, first round)."""
    target = f"127.0.0.1:{allocator.grpc.port}"
    out = await asyncio.to_thread(_train, target, tmp_path / "drop", True, 4, "drop")
    knap = out["knap"]
    assert [rows for rows, _ in out["in_loss"]] == [p.total for p in knap.plans]
    assert knap.rows_in_loss == [p.total for p in knap.plans]
    assert all(p.total < 4 * G for p in knap.plans)  # there were pads to drop
    padded = await asyncio.to_thread(_train, target, tmp_path / "pad", False, 1, "pad")
    assert [rows for rows, _ in padded["in_loss"]] == [4 * G]
    first_real = sorted(a for a in padded["in_loss"][0][1] if a != 0.0)
    assert sorted(a for a in out["in_loss"][0][1] if a != 0.0) == pytest.approx(first_real)


async def test_generation_grouped_by_n_as_trl_vllm_server_mode_needs(allocator, tmp_path):
    """TRL's vLLM server mode (which needs CUDA for its weight transfer, so it cannot run here)
    takes rows[::n] of a call and asks n completions of each. With group_by_n (its default
    there) each call holds one n, every prompt as n contiguous copies, and together the calls
    are the round's real rollouts; run on TRL's transformers path, whose output goes back to the
    right rows (the reported trials match)."""
    target = f"127.0.0.1:{allocator.grpc.port}"
    out = await asyncio.to_thread(_train, target, tmp_path, False, 4, "grouped", True)
    knap, calls = out["knap"], out["calls"]
    per_round: list = []
    for plan in knap.plans:
        ks = sorted(set(plan.n.values()))
        mine, calls = calls[: len(ks)], calls[len(ks) :]
        assert [k for k, _ in mine] == ks
        for k, rows in mine:
            assert len(rows) % k == 0
            firsts = rows[::k]
            assert rows == [r for r in firsts for _ in range(k)]  # n contiguous copies
        per_round.append(sum(len(rows) for _, rows in mine))
    assert calls == []
    assert per_round == [p.total for p in knap.plans]
    assert any(len(set(p.n.values())) > 1 for p in knap.plans)  # more than one n was asked
    trials = {}
    for plan in knap.plans:
        for pid, n in plan.n.items():
            trials[pid] = trials.get(pid, 0) + n
    assert {s.prompt_id: s.trials for s in out["stats"]} == trials


def test_balanced_prompts_weigh_alike_whatever_their_n(allocator):
    """balance_prompts scales prompt k's advantages by mean(n) / n_k: every prompt's rows sum
    to the same weight in a row-averaged loss, as in a uniform group (pads keep advantage 0)."""
    import torch

    from krl_client import AllocationSession, AllocatorClient
    from krl_client.trl import KnapsackGRPO

    session = AllocationSession(
        AllocatorClient(f"127.0.0.1:{allocator.grpc.port}", "bal"),
        budget_per_prompt=2,
        min_n=1,
        max_n=4,
    )
    knap = KnapsackGRPO(session, [lambda **kw: []], num_generations=4)
    n = [4, 2, 1, 1]  # 8 real rows over 4 prompts: mean 2
    pads = [j >= k for k in n for j in range(4)]
    adv = torch.ones(16)
    out = {"advantages": adv.clone()}
    knap._balance(out, pads)
    got = out["advantages"].reshape(4, 4)
    real = ~torch.tensor(pads).reshape(4, 4)
    assert torch.allclose((got * real).sum(1), torch.full((4,), 2.0))  # each prompt weighs 2
    assert torch.allclose(got[0], torch.full((4,), 0.5))
    assert float(got[2, 0]) == 2.0
