"""What the TRL integration's pads cost: GRPOTrainer steps on CPU with the tiny model, three
ways at one prompt batch: knapsack (groups num_generations=16 wide, budget 8 per prompt, the
rest pads), plain TRL with 8 generations (the same rollouts, uniform), and plain TRL with 16.
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


def run(target: str | None, g: int, tmp: Path) -> float:
    folder = build_tiny_model(tmp / f"m{g}{target is None}")
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
    t = time.perf_counter()
    tr.train()
    return (time.perf_counter() - t) / STEPS


if __name__ == "__main__":
    tmp = Path(tempfile.mkdtemp())
    k = run(sys.argv[1], 16, tmp)
    u8 = run(None, 8, tmp)
    u16 = run(None, 16, tmp)
    print(f"s/step, {PROMPTS} prompts, {LEN} new tokens, {STEPS} steps:")
    print(f"  knapsack (16 wide, 8/prompt + pads): {k:.3f}")
    print(f"  plain TRL, 8 generations:           {u8:.3f}")
    print(f"  plain TRL, 16 generations:          {u16:.3f}")
    print(
        f"  pads cost {100 * (k / u8 - 1):+.1f}% over 8 generations; saves {100 * (1 - k / u16):.1f}% of 16"
    )
