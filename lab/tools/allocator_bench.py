"""Benchmarks of the allocator (`krl bench solver|allocator|load`). They print figures and
compare side by side in one run; they are not tests."""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from krl.allocator.solve import grid, objectives, solver, values
from krl.allocator.solve.prior import RateMoments, fit_prior
from krl.tools import paper_dp as dp

console = Console()
SIZES = [(256, 2048, 2, 64), (1024, 8192, 2, 128), (4096, 32768, 2, 128), (65536, 524288, 2, 256)]


def random_batch(m: int, rng: np.random.Generator, trials: int = 8) -> solver.Batch:
    """A batch as training makes it: latent success rates spread over [0, 1] with mass at the
    ends (many prompts solved or unsolved), and `trials` rollouts of evidence each."""
    p = rng.beta(0.5, 0.5, m)
    t = np.full(m, trials, dtype=np.float64)
    s = rng.binomial(trials, p).astype(np.float64)
    a0, b0 = fit_prior(RateMoments.from_counts(s, t))
    batch = solver.Batch(s, t, a0 + s, b0 + t - s)
    batch.weights = grid.posterior(grid.fit_prior(s, t), s, t - s)
    return batch


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


BENCH_MODES = (
    (solver.Mode.PAPER, "paper"),
    (solver.Mode.EB, "paper"),
    (solver.Mode.EB, objectives.DEFAULT),
)
"""Modes timed; eb with the paper's objective (concave: equal to the DP) and with the default
(non-concave: within the certified gap of the DP's optimum)."""


def _agreement(dp_objective: float, sol: solver.Solution) -> str:
    if np.isclose(dp_objective, sol.objective, rtol=1e-9, atol=1e-12):
        return "yes"
    if sol.gap_bound > 0 and dp_objective - sol.gap_bound - 1e-9 <= sol.objective <= dp_objective:
        return f"within gap ({(dp_objective - sol.objective) / dp_objective:.1e} below)"
    return f"NO ({dp_objective} vs {sol.objective})"


def bench_solver(args: argparse.Namespace) -> int:
    rng = np.random.default_rng(args.seed)
    table = Table(title="exact solver vs the paper's DP (same instance; median of repeats)")
    for col in (
        "prompts",
        "budget",
        "N range",
        "mode",
        "ours ms",
        "DP ms",
        "DP/ours",
        "objectives equal",
    ):
        table.add_column(col, justify="right")
    for m, budget, lo, hi in SIZES:
        batch = random_batch(m, rng)
        post_ms = _median_ms(
            lambda b=batch: grid.posterior(
                grid.FLAT, b.last_successes, b.last_trials - b.last_successes
            ),
            3,
        )
        console.print(f"  {m} prompts: eb posterior on the grid {post_ms:.2f} ms", style="dim")
        for mode, objective in BENCH_MODES:
            problem = solver.Problem(budget, lo, hi, mode, fallback=False, objective=objective)
            reps = args.repeats if m <= 4096 else max(3, args.repeats // 4)
            ours = _median_ms(lambda pr=problem, b=batch: solver.solve(pr, b), reps)
            sol = solver.solve(problem, batch)
            dp_ms, ratio, equal = "-", "-", "-"
            if m <= args.dp_max_prompts:
                ns = np.arange(lo, hi + 1)[None, :]
                if mode is solver.Mode.PAPER:
                    table_v = values.paper_value(
                        ns, (batch.last_successes / batch.last_trials)[:, None]
                    )
                else:
                    w = batch.weights
                    table_v = np.stack(
                        [objectives.expected_value(w, np.full(m, n), objective) for n in ns[0]],
                        axis=1,
                    )
                t0 = time.perf_counter()
                _, obj = dp.dp_allocate(table_v, budget - m * lo)
                dp_s = time.perf_counter() - t0
                dp_ms, ratio = f"{dp_s * 1e3:.0f}", f"{dp_s * 1e3 / ours:.0f}x"
                equal = _agreement(obj, sol)
            name = mode.value if mode is not solver.Mode.EB else f"eb {objective}"
            table.add_row(
                str(m), str(budget), f"[{lo}, {hi}]", name, f"{ours:.2f}", dp_ms, ratio, equal
            )
            console.print(f"  {m} prompts, {name}: {ours:.2f} ms", style="dim")
    console.print(table)
    return 0


def _seeded_server(stack: ExitStack, target: str | None) -> tuple[str, Path | None]:
    """The target, and the unix socket of the embedded Redis when the bench started one."""
    if target:
        return target, None
    from krl.common.procs import allocator_process

    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="krl-bench-")))
    proc = allocator_process(tmp, "--log-level", "WARNING")
    stack.enter_context(proc)
    target = proc.target
    console.print(f"started an allocator (embedded Redis) at {target}", style="dim")
    return target, tmp / "redis" / "redis.sock"


def _memory(sock: Path, ns: str, allocation_id: str, prompts: int) -> str:
    """Redis bytes per prompt: an allocation (hash + reported set) and the prompt records."""
    import redis

    r = redis.Redis(unix_socket_path=str(sock))
    try:
        key = f"krl:{{{ns}}}:a:{allocation_id}"
        alloc = sum(r.memory_usage(k, samples=0) or 0 for k in (key, key + ":r"))
        records = sum(r.memory_usage(k, samples=0) or 0 for k in r.scan_iter(f"krl:{{{ns}}}:r:*"))
    finally:
        r.close()
    return (
        f"Redis memory per prompt: allocation {alloc / prompts:.1f} B (hash + reported set; "
        f"{alloc / 1024:.1f} KiB for {prompts} prompts), history record {records / prompts:.1f} B"
    )


def _pcts(xs: list[float]) -> str:
    a = np.array(xs) * 1e3
    return f"p50 {np.percentile(a, 50):.2f} ms, p90 {np.percentile(a, 90):.2f} ms, p99 {np.percentile(a, 99):.2f} ms"


def bench_allocator(args: argparse.Namespace) -> int:
    from krl_client import AllocatorClient

    rng = np.random.default_rng(0)
    ids = [f"prompt-{i}" for i in range(args.prompts)]
    p_true = rng.beta(0.5, 0.5, args.prompts)
    with ExitStack() as stack:
        target, sock = _seeded_server(stack, args.target)
        ns = f"bench-{int(time.time())}"
        client = stack.enter_context(AllocatorClient(target, namespace=ns))
        alloc_t, report_t = [], []
        for step in range(args.requests):
            t0 = time.perf_counter()
            a = client.allocate(ids, budget=8 * len(ids), step=step, min_n=2, max_n=128)
            alloc_t.append(time.perf_counter() - t0)
            outcomes = {
                pid: (int(rng.binomial(n, p_true[i])), n, 100 * n)
                for i, (pid, n) in enumerate(a.n.items())
            }
            t0 = time.perf_counter()
            client.report(a.allocation_id, outcomes)
            report_t.append(time.perf_counter() - t0)
        console.print(
            f"{args.requests} rounds of {args.prompts} prompts over loopback gRPC (with Redis):"
        )
        console.print(f"  Allocate       {_pcts(alloc_t)}")
        console.print(f"  ReportOutcomes {_pcts(report_t)}")
        if sock is not None:
            console.print(_memory(sock, ns, a.allocation_id, args.prompts))
    return 0


def bench_load(args: argparse.Namespace) -> int:
    from krl_client import AllocatorClient

    seconds = min(args.seconds, 120.0)
    ids = [f"prompt-{i}" for i in range(args.prompts)]
    with ExitStack() as stack:
        target, _ = _seeded_server(stack, args.target)
        ok = [0] * args.clients
        errors: list[str] = []
        lat: list[list[float]] = [[] for _ in range(args.clients)]
        stop_at = time.monotonic() + seconds

        def worker(k: int) -> None:
            with AllocatorClient(target, namespace="bench-load", retries=0) as c:
                while time.monotonic() < stop_at:
                    t0 = time.perf_counter()
                    try:
                        c.allocate(ids, budget=8 * len(ids), step=0, min_n=2, max_n=64)
                        ok[k] += 1
                        lat[k].append(time.perf_counter() - t0)
                    except Exception as e:  # counted and reported, the load goes on
                        errors.append(repr(e))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        total = sum(ok)
        console.print(
            f"{args.clients} clients x {seconds:.0f} s, {args.prompts} prompts per Allocate: "
            f"{total} ok, {len(errors)} errors, {total / wall:.0f} Allocate/s; "
            f"{_pcts([x for xs in lat for x in xs])}"
        )
        if errors:
            console.print(f"first error: {errors[0]}", style="red")
        return 1 if errors else 0
