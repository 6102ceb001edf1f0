"""TRL's GRPOTrainer, plain against KnapsackGRPO (drop_pads), on the reverse task at equal
rollouts: the warmed-up tiny policy (the loop's warm-up, cached in .krl/models), each step P
prompts; plain TRL gives each prompt K generations, knapsack groups are G wide with a budget of
K per prompt (min 2, max G). Per seed and arm: s/step, rollouts, effective-rollout ratio (rows in
groups with mixed rewards), held-out greedy accuracy at the end. Run it alone; it starts its own
allocator (embedded Redis).

    python scripts/trl_side_by_side.py --seeds 11,12,13 --steps 300
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
import torch
from datasets import Dataset
from scipy import stats
from trl import GRPOConfig, GRPOTrainer

from krl.common.procs import allocator_process
from krl.model.loading import load_model, load_tokenizer
from krl.rollout.verifiers import exact
from krl.tasks.reverse import ReverseSource
from krl.trainer.policy import prepare_policy
from krl_client import AllocationSession, AllocatorClient
from krl_client.trl import KnapsackGRPO


def heldout_accuracy(model, tok, tasks, max_new: int) -> float:
    model.eval()
    right = 0
    with torch.no_grad():
        for i in range(0, len(tasks), 64):
            part = tasks[i : i + 64]
            enc = tok(
                [t.prompt for t in part], return_tensors="pt", padding=True, padding_side="left"
            )
            out = model.generate(
                **enc, do_sample=False, max_new_tokens=max_new, pad_token_id=tok.pad_token_id
            )
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            right += sum(exact(x, t.answer) for x, t in zip(texts, part, strict=True))
    return right / len(tasks)


def run(arm: str, seed: int, a: argparse.Namespace, policy: Path, src, target: str, tmp: Path):
    answers = {t.prompt: t.answer for t in src.train}
    groups: list[tuple[int, int]] = []  # (rows, rows in mixed groups) per reward call

    def reward(prompts, completions, **kw):
        r = [exact(c, answers[p]) for p, c in zip(prompts, completions, strict=True)]
        by: dict[str, list[float]] = {}
        for p, x in zip(prompts, r, strict=True):
            by.setdefault(p, []).append(x)
        mixed = sum(len(v) for v in by.values() if 0 < sum(v) < len(v))
        groups.append((len(r), mixed))
        return r

    g = a.width if arm.startswith("knapsack") else a.k
    kw: dict = {}
    funcs = [reward]
    knap = None
    if arm.startswith("knapsack"):
        session = AllocationSession(
            AllocatorClient(target, f"sbs-{seed}-{time.time_ns()}"),
            budget_per_prompt=a.k,
            min_n=2,
            max_n=g,
        )
        knap = KnapsackGRPO(session, funcs, num_generations=g)
        funcs, kw = knap.reward_funcs, {"rollout_func": knap.rollout_func}
    args = GRPOConfig(
        output_dir=str(tmp / f"{arm}-{seed}"),
        num_generations=g,
        per_device_train_batch_size=a.prompts * g,
        max_steps=a.steps,
        max_completion_length=a.max_new,
        learning_rate=a.lr,
        temperature=1.0,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=seed,
        logging_steps=10_000,
        disable_tqdm=True,
    )
    model = load_model(policy)
    tok = load_tokenizer(policy)
    tr = GRPOTrainer(
        model=model,
        processing_class=tok,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list([{"prompt": t.prompt} for t in src.train]),
        **kw,
    )
    if knap is not None:
        knap.drop_pads(tr, balance_prompts=arm == "knapsack-balanced")
    t0 = time.perf_counter()
    tr.train()
    per_step = (time.perf_counter() - t0) / a.steps
    rows = sum(n for n, _ in groups)
    mixed = sum(m for _, m in groups)
    acc = heldout_accuracy(tr.model, tok, src.heldout, a.max_new)
    return {"s_step": per_step, "rollouts": rows, "effective": mixed / rows, "heldout": acc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="11,12,13")
    p.add_argument(
        "--arms",
        default="plain,knapsack,knapsack-balanced",
        help="plain | knapsack (drop_pads) | knapsack-balanced (drop_pads(balance_prompts=True))",
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--prompts", type=int, default=16, help="P: prompts per step")
    p.add_argument("--k", type=int, default=4, help="K: rollouts per prompt (plain's group)")
    p.add_argument("--width", type=int, default=16, help="G: knapsack's group width (= max_n)")
    p.add_argument("--max-new", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5, help="2e-4 unlearns here under TRL's loss")
    p.add_argument("--train-per-level", type=int, default=128, help="small: prompts come back")
    p.add_argument("--heldout-per-level", type=int, default=128)
    a = p.parse_args()
    arms = a.arms.split(",")
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    src = ReverseSource(
        seed=0, train_per_level=a.train_per_level, heldout_per_level=a.heldout_per_level
    )
    policy = prepare_policy(
        "tiny",
        tasks=src.train,
        task_name="reverse",
        warmup_steps=150,
        warmup_lr=1e-3,
        seed=0,
        cache_dir=Path(".krl/models"),
    )
    tmp = Path(tempfile.mkdtemp())
    (tmp / "alloc").mkdir()
    svc = allocator_process(tmp / "alloc")
    svc.start()
    try:
        rows = []
        for seed in [int(s) for s in a.seeds.split(",")]:
            for arm in arms:  # paired: same seed, one after the other
                r = run(arm, seed, a, policy, src, svc.target, tmp)
                rows.append((arm, seed, r))
                print(
                    f"{arm:17s} seed {seed}: {r['s_step']:.3f} s/step, {r['rollouts']} rollouts, "
                    f"effective {100 * r['effective']:.1f}%, held-out {100 * r['heldout']:.1f}%",
                    flush=True,
                )
    finally:
        svc.stop()
    print(f"\n{a.steps} steps x {a.prompts} prompts, K={a.k}, G={a.width}; mean over seeds:")
    for arm in arms:
        rs = [r for x, _, r in rows if x == arm]
        print(
            f"  {arm:17s} {statistics.mean(r['s_step'] for r in rs):.3f} s/step  "
            f"rollouts {statistics.mean(r['rollouts'] for r in rs):.0f}  "
            f"effective {100 * statistics.mean(r['effective'] for r in rs):.1f}%  "
            f"held-out {100 * statistics.mean(r['heldout'] for r in rs):.1f}%"
        )
    plain = {s: r for x, s, r in rows if x == "plain"}
    for arm in [x for x in arms if x != "plain"]:
        diffs = [100 * (r["heldout"] - plain[s]["heldout"]) for x, s, r in rows if x == arm]
        if len(diffs) > 1 and len(plain) == len(diffs):
            m, sd = statistics.mean(diffs), statistics.stdev(diffs)
            half = stats.t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
            print(f"  held-out, {arm} - plain: {m:+.1f} points [{m - half:+.1f}, {m + half:+.1f}]")


if __name__ == "__main__":
    main()
