"""`krl bench rollout`: tokens/s of the rollout service (a `krl rollout` process, gRPC on
loopback) against calling the same engine directly in this process, on the same batch (the
same prompts, n and seed, so both generate the same tokens). Rounds alternate between the two,
so machine noise hits both alike; medians are compared."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def bench_rollout(args: argparse.Namespace) -> int:
    import torch

    from krl.clients.rollout import PromptSpec, RolloutClient
    from krl.common.procs import ServiceProcess, free_port
    from krl.model.tiny import build_tiny_model
    from krl.rollout.engines.base import GenItem, Sampling
    from krl.rollout.engines.hf import HfEngine

    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="krl-bench-rollout-"))
    model = Path(args.model) if args.model else build_tiny_model(tmp / "tiny", seed=0)
    texts = [f"{i % 97}+{(7 * i) % 89}=" for i in range(args.prompts)]
    specs = [PromptSpec(f"p{i}", args.n, t, "0") for i, t in enumerate(texts)]
    sampling = Sampling(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=args.seed)

    torch.set_num_threads(args.threads)
    engine = HfEngine(model, max_batch_rows=args.max_batch_rows)
    items = [
        GenItem((i, 0), tuple(engine.tokenizer(t, add_special_tokens=False)["input_ids"]), args.n)
        for i, t in enumerate(texts)
    ]
    port = free_port()
    svc = ServiceProcess(
        [
            "rollout",
            "--grpc-port",
            str(port),
            "--http-port",
            str(free_port()),
            "--model",
            str(model),
            "--log-level",
            "WARNING",
        ],
        f"127.0.0.1:{port}",
        env={
            "KRL_ROLLOUT_THREADS_PER_REPLICA": str(args.threads),
            "KRL_ROLLOUT_ENGINE__MAX_BATCH_ROWS": str(args.max_batch_rows),
        },
    )
    direct_s, service_s = [], []
    with svc.start(120), RolloutClient(f"127.0.0.1:{port}") as client:

        def run_direct() -> int:
            return sum(len(s.token_ids) for _, ss in engine.generate(items, sampling) for s in ss)

        def run_service() -> int:
            groups = client.generate(
                specs, temperature=1.0, max_new_tokens=args.max_new_tokens, seed=args.seed
            )
            return sum(len(c.token_ids) for g in groups for c in g.completions)

        tokens = run_direct(), run_service()  # warm-up; also checks both generate the same
        console.print(
            f"batch: {args.prompts} prompts x n={args.n}, max_new_tokens "
            f"{args.max_new_tokens}, {args.threads} torch threads each; tokens per "
            f"batch: direct {tokens[0]}, service {tokens[1]}"
        )
        for r in range(args.rounds):
            for _name, fn, out in (
                ("direct", run_direct, direct_s),
                ("service", run_service, service_s),
            )[:: 1 if r % 2 else -1]:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    d, s = statistics.median(direct_s), statistics.median(service_s)
    table = Table(title="rollout service vs the same engine called directly (median of rounds)")
    for col in ("path", "seconds / batch", "tokens/s", "overhead"):
        table.add_column(col, justify="right")
    table.add_row("engine direct", f"{d:.3f}", f"{tokens[0] / d:,.0f}", "")
    table.add_row(
        "service (gRPC)",
        f"{s:.3f}",
        f"{tokens[1] / s:,.0f}",
        f"{(tokens[0] / d - tokens[1] / s) / (tokens[0] / d):+.1%}",
    )
    console.print(table)
    if tokens[0] != tokens[1]:
        console.print("[yellow]note: token counts differ; compare tokens/s, not seconds[/]")
    return 0
