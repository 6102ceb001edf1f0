"""What the TRL integration costs per step: GRPOTrainer steps on CPU with the tiny model, four
ways at one prompt batch: knapsack with drop_pads (groups num_generations=16 wide, budget 8 per
prompt, pads out of the loss), knapsack with its pads trained on (without drop_pads), plain TRL
with 8 generations (the same rollouts, uniform), and plain TRL with 16. Run it alone.
Needs a running allocator: python scripts/bench_trl_padding.py 127.0.0.1:50051"""

import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from krl.model.loading import load_model, load_tokenizer
from krl.model.tiny import build_tiny_model
from krl_client import AllocationSession, AllocatorClient
from krl_client.trl import KnapsackGRPO

STEPS, PROMPTS, LEN = 12, 8, 32


def run(target: str | None, g: int, tmp: Path, drop: bool = True) -> float:
    folder = build_tiny_model(tmp / f"m{g}{target is None}{drop}")
    rng = random.Random(0)
    rows = [{"prompt": f"{i}*{i}=", "rate": i / 31} for i in range(32)]

    def success(prompts, completions, rate, **kw):
        return [1.0 if rng.random() < r else 0.0 for r in rate]

    kw = {}
    funcs = [success]
    if target is not None:
        s = AllocationSession(
            AllocatorClient(target, f"bench{time.time_ns()}"), budget_per_prompt=8, min_n=2, max_n=g
        )
        knap = KnapsackGRPO(s, funcs, num_generations=g)
        funcs, kw = knap.reward_funcs, {"rollout_func": knap.rollout_func}
    args = GRPOConfig(
        output_dir=str(tmp / "o"),
        num_generations=g,
        per_device_train_batch_size=PROMPTS * g,
        max_steps=STEPS,
        max_completion_length=LEN,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        seed=0,
        logging_steps=100,
        disable_tqdm=True,
    )
    tr = GRPOTrainer(
        model=load_model(folder),
        processing_class=load_tokenizer(folder),
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        **kw,
    )
    if target is not None and drop:
        knap.drop_pads(tr)
    t = time.perf_counter()
    tr.train()
    return (time.perf_counter() - t) / STEPS


if __name__ == "__main__":
    tmp = Path(tempfile.mkdtemp())
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    times: dict[str, list[float]] = {"drop": [], "pads": [], "u8": [], "u16": []}
    for _ in range(rounds):  # interleaved: the machine's drift hits every arm alike
        times["drop"].append(run(sys.argv[1], 16, tmp, drop=True))
        times["pads"].append(run(sys.argv[1], 16, tmp, drop=False))
        times["u8"].append(run(None, 8, tmp))
        times["u16"].append(run(None, 16, tmp))
    med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    print(f"s/step (median of {rounds}), {PROMPTS} prompts, {LEN} new tokens, {STEPS} steps:")
    print(
        f"  knapsack, drop_pads (8/prompt):     {med['drop']:.3f}  {med['drop'] / med['u8']:.2f}x"
    )
    print(
        f"  knapsack, pads trained on:          {med['pads']:.3f}  {med['pads'] / med['u8']:.2f}x"
    )
    print(f"  plain TRL, 8 generations:           {med['u8']:.3f}  1.00x")
    print(f"  plain TRL, 16 generations:          {med['u16']:.3f}  {med['u16'] / med['u8']:.2f}x")
    print(
        "  per round, drop / u8:",
        " ".join(f"{d / u:.2f}" for d, u in zip(times["drop"], times["u8"], strict=True)),
    )
