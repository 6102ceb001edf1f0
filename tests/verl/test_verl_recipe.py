"""The verl recipe (krl_client.verl) against verl 0.9.1's own DataProto and GRPO advantage
functions on CPU, with a real allocator. verl's pins clash with ours (it wants transformers
5.10), so it runs in its own tier: `make test-verl` (scripts/verl_env.sh)."""

import asyncio

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.verl, pytest.mark.integration]

IDS = ["easy", "hard", "mid", "rare"]
RATE = {"easy": 1.0, "hard": 0.0, "mid": 0.5, "rare": 0.25}


def _step(target: str, step: int, journal) -> dict:
    from verl import DataProto
    from verl.trainer.ppo import core_algos

    from krl_client import AllocationSession, AllocatorClient
    from krl_client.verl import PROMPT_ID, repeat_by_allocation, report_batch

    with AllocatorClient(target, namespace="verl") as client:
        session = AllocationSession(client, budget_per_prompt=6, min_n=2, max_n=12, journal=journal)
        batch = DataProto.from_dict(
            tensors={"input_ids": torch.arange(4 * 3).reshape(4, 3)},
            non_tensors={"prompt_id": np.array(IDS, dtype=object)},
        )
        batch.non_tensor_batch["uid"] = np.array([f"u-{p}" for p in IDS], dtype=object)
        plan = session.allocate(step, list(batch.non_tensor_batch["prompt_id"]))
        rows = repeat_by_allocation(batch, plan)
        # verl's rollout fills responses; here each row succeeds per its prompt's rate
        length = 5
        scores = torch.zeros(len(rows), length)
        k_seen: dict[str, int] = {}
        for i, pid in enumerate(rows.non_tensor_batch[PROMPT_ID]):
            j = k_seen[pid] = k_seen.get(pid, 0) + 1
            scores[i, -1] = 1.0 if j <= round(RATE[pid] * plan.n[pid]) else 0.0
        rows.batch["token_level_scores"] = scores
        rows.batch["response_mask"] = torch.ones(len(rows), length)
        adv, _ = core_algos.compute_grpo_outcome_advantage(
            scores, rows.batch["response_mask"], rows.non_tensor_batch["uid"]
        )
        vec, _ = core_algos.compute_grpo_vectorized_outcome_advantage(
            scores, rows.batch["response_mask"], rows.non_tensor_batch["uid"]
        )
        res = report_batch(session, plan, rows)
        stats = {s.prompt_id: s for s in client.prompt_stats(IDS)}
    return {"plan": plan, "rows": rows, "adv": adv, "vec": vec, "res": res, "stats": stats}


async def test_verl_grpo_advantage_on_allocated_groups_and_report(allocator, tmp_path):
    target = f"127.0.0.1:{allocator.grpc.port}"
    journal = tmp_path / "alloc.jsonl"
    out = None
    for step in (1, 2, 3):
        out = await asyncio.to_thread(_step, target, step, journal)
    plan, rows, adv = out["plan"], out["rows"], out["adv"]
    assert len(rows) == plan.total <= 24 and len(set(plan.n.values())) > 1
    uid = rows.non_tensor_batch["uid"]
    assert [u for u in uid] == [f"u-{p}" for p in IDS for _ in range(plan.n[p])]
    seq = adv[:, -1]
    for pid in IDS:  # each group normalised by its own size, by verl's function
        g = seq[torch.tensor(uid == f"u-{pid}")]
        assert g.shape[0] == plan.n[pid]
        assert abs(float(g.mean())) < 1e-5
    assert torch.allclose(adv, out["vec"], atol=1e-4)  # the vectorised twin agrees
    assert out["res"].accepted == 4
    s = out["stats"]
    assert s["easy"].successes == s["easy"].trials and s["hard"].successes == 0
    assert s["mid"].mean_tokens == 5.0
    # resuming step 3 from the journal reports nothing twice
    again = await asyncio.to_thread(_step, target, 3, journal)
    assert again["plan"].replayed and again["res"].duplicates == 4


async def test_readme_verl_snippet_runs(allocator):
    from tests.integration.test_readme_snippets import allocator_http, snippet

    code = snippet("verl", f"127.0.0.1:{allocator.grpc.port}")
    await asyncio.to_thread(exec, code, {})
    summary = await allocator_http(allocator, "/v1/namespaces/my-run")
    assert summary["prompts_tracked"] == 3 and summary["reports"] == 1
