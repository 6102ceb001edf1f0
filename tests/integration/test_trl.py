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
    target: str, tmp_path, drop_pads: bool = False, steps: int = 8, namespace: str = "trl"
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
    knap = KnapsackGRPO(session, [success], num_generations=G)
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
