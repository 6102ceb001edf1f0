"""`krl simulate` and `krl experiment`: flags, checks and the printed summary."""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import fields
from pathlib import Path

from krl.allocator.solve.objectives import OBJECTIVES
from krl.rl.strategies import STRATEGIES, parse_strategy
from krl.sim.engine import SimConfig

SIM_HELP = {
    "difficulty": "initial success probabilities: beta:A,B | levels:P1,P2,... | fixed:P",
    "prompts": "training prompts in the population",
    "heldout": "held-out prompts (same distribution; only the shared skill moves them)",
    "prompts_per_step": "prompts per step M",
    "rollouts_per_prompt": "budget per step B = M x this (uniform's n)",
    "min_n": "fewest rollouts a prompt gets (knapsack)",
    "max_n": "most rollouts a prompt gets (knapsack)",
    "steps": "steps (of uniform); the equal rollout budget is steps x B",
    "eval_every": "held-out accuracy every E steps",
    "dapo_max_rounds": "dapo: most batches of M prompts per update",
    "lr_shared": "learning model: step size of the shared skill (0 with lr-own 0: static)",
    "lr_own": "learning model: step size of a prompt's own term",
    "loss_agg": "learning model: constant (Dr. GRPO) | token-mean | group-mean",
    "half_life_steps": "allocator: explicit evidence half-life in steps (0: off)",
    "visit_half_life": "knapsack-eb: evidence half-life in the prompt's visits (0: never; "
    "default: the allocator's)",
    "objective": f"knapsack-eb: {' | '.join(OBJECTIVES)} (default: the allocator's)",
}
SIM_ACCURACY_NOTE = (
    "held-out: the simulator's learning model, not a policy; it cannot judge an objective that "
    "matches that model (docs/SIMULATOR.md). Judge allocations with --backend loop."
)
SIM_ONLY = ("difficulty", "prompts", "heldout", "lr_shared", "lr_own", "loss_agg")
LOOP_ONLY = (
    "task",
    "lr",
    "threads",
    "warmup_steps",
    "warmup_seed",
    "max_new_tokens",
    "eval_per_level",
    "train_per_level",
    "reward",
)


def _sim_flags(p: argparse.ArgumentParser) -> None:
    for f in fields(SimConfig):
        extra: dict = {"type": float if f.default is None else type(f.default)}
        if f.name == "objective":
            extra = {"type": str, "choices": OBJECTIVES}
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            default=None,
            help=f"{SIM_HELP[f.name]} (default {f.default})",
            **extra,
        )


def _strategies(text: str) -> tuple[str, ...]:
    try:
        out = tuple(parse_strategy(s.strip()).value for s in text.split(",") if s.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not out:
        raise argparse.ArgumentTypeError(
            f"no strategy in {text!r}: use any of {','.join(STRATEGIES)}"
        )
    return out


MAX_SEED_COUNT = 64
"""A larger count is a seed meant as a list of one (an hour-long run each on the loop)."""


def _seeds(text: str) -> tuple[int, ...]:
    """'3' -> seeds 0, 1, 2; '0,5,7' -> those; '616,' -> seed 616."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds {text!r}: a count or a list like 0,1,2") from None
    if len(vals) == 1 and "," not in text:
        if vals[0] < 1:
            raise argparse.ArgumentTypeError("seeds: the count must be >= 1")
        if vals[0] > MAX_SEED_COUNT:
            raise argparse.ArgumentTypeError(
                f"seeds {text!r} is a count of {vals[0]} runs per strategy (at most "
                f"{MAX_SEED_COUNT}); for the one seed {vals[0]} write '{vals[0]},'"
            )
        return tuple(range(vals[0]))
    if not vals or min(vals) < 0 or len(set(vals)) != len(vals):
        raise argparse.ArgumentTypeError(f"seeds {text!r}: distinct seeds >= 0")
    return tuple(vals)


def _sim_config(args: argparse.Namespace) -> SimConfig:
    given = {
        f.name: getattr(args, f.name)
        for f in fields(SimConfig)
        if getattr(args, f.name, None) is not None
    }
    cfg = SimConfig(**given)
    cfg.validate()
    return cfg


def _backend_factory(args: argparse.Namespace, cfg: SimConfig):
    from krl.common.config import secret

    if args.allocator:
        from krl.sim.backends import ServiceAllocator

        token = secret(None, args.allocator_token_file)
        return lambda: ServiceAllocator(args.allocator, token)
    from krl.sim.backends import InProcessAllocator

    return lambda: InProcessAllocator(cfg.half_life_steps)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="simulate strategies on a population of prompts (seconds, no model)",
        description="Simulate training on a population of prompts with latent success "
        "probabilities and Bernoulli rewards; the real allocator code (in process over an "
        "embedded Redis, or --allocator) decides n per prompt. Prints, per strategy, the "
        "effective-rollout ratio (drawn and closed-form expected), the largest n and the "
        "held-out accuracy of the learning model. See docs/SIMULATOR.md.",
    )
    _sim_flags(p)
    p.add_argument(
        "--strategies",
        type=_strategies,
        default=STRATEGIES,
        help=f"comma list (default {','.join(STRATEGIES)})",
    )
    p.add_argument("--seed", type=int, default=0, help="population, data order and rewards")
    _allocator_flags(p)
    p.set_defaults(func=run_simulate)

    e = sub.add_parser(
        "experiment",
        help="strategies x seeds at equal rollout budgets: table and plots",
        description="Run strategies (uniform, the knapsack modes, dapo) over several seeds at "
        "equal rollout budgets, on the simulator (--backend sim) or on the real tiny-model loop "
        "(--backend loop: one `krl up` per run), and write OUT/results.md, results.json and the "
        "plots. Running the same command again skips finished runs and resumes the others.",
    )
    e.add_argument(
        "--backend",
        choices=("sim", "loop"),
        default="sim",
        help="sim: the simulator; loop: real training runs through the three services "
        "(default sim)",
    )
    e.add_argument(
        "--strategies",
        type=_strategies,
        default=STRATEGIES,
        help=f"comma list (default {','.join(STRATEGIES)})",
    )
    e.add_argument(
        "--seeds",
        type=_seeds,
        default=(0, 1, 2),
        help="a count (3 = seeds 0,1,2; the default; at most 64) or a list 0,4,5 (one seed: 7,)",
    )
    e.add_argument(
        "--out", type=Path, help="experiment folder (default runs/experiments/<time>-<backend>)"
    )
    e.add_argument(
        "--baseline-factor",
        type=float,
        default=None,
        help="uniform runs this many times the budget, to read the compute it needs "
        "to match (default 3 on sim, 1 on loop)",
    )
    e.add_argument("--title", help="title of the plots and results.md")
    _sim_flags(e)
    loop = e.add_argument_group("loop backend (trainer settings; see krl up)")
    loop.add_argument("--task", help="trainer task (default reverse)")
    loop.add_argument("--lr", type=float, help="AdamW learning rate")
    loop.add_argument("--threads", type=int, help="torch threads of each trainer")
    loop.add_argument("--warmup-steps", type=int, help="supervised warm-up steps")
    loop.add_argument(
        "--warmup-seed",
        type=int,
        help="task data, model and warm-up (default 0): every run of the experiment shares "
        "this one warmed-up policy; another value replicates it on a fresh draw",
    )
    loop.add_argument("--max-new-tokens", type=int, help="longest completion")
    loop.add_argument(
        "--eval-per-level",
        type=int,
        help="held-out prompts per level (default 64; 256 gives 1,536 on reverse)",
    )
    loop.add_argument(
        "--train-per-level", type=int, help="training prompts per level (default 512)"
    )
    loop.add_argument(
        "--reward",
        choices=("score", "success"),
        help="what the loss trains on: the verifier's score (default) or success (binary)",
    )
    _allocator_flags(e)
    e.set_defaults(func=run_experiment)


def _allocator_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allocator",
        help="use a running allocator service (host:port) instead of "
        "the in-process one (its half-life is the service's)",
    )
    p.add_argument("--allocator-token-file", type=Path, help="bearer token for --allocator")


def run_simulate(args: argparse.Namespace) -> int:
    from krl.experiment.analysis import RunCurves, effective_ratio
    from krl.sim.engine import simulate

    try:
        cfg = _sim_config(args)
        factory = _backend_factory(args, cfg)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    backend = factory()
    rows = []
    try:
        for strategy in args.strategies:
            res = simulate(cfg, strategy, args.seed, backend)
            run = RunCurves.from_rows(strategy, args.seed, res.rows)
            _, acc = run.accuracy()
            rows.append((strategy, run, acc, res.seconds))
    finally:
        backend.close()
    base = {s: effective_ratio(r.steps) for s, r, _, _ in rows}.get("uniform")
    print(
        f"population {cfg.difficulty}, {cfg.prompts} prompts, M={cfg.prompts_per_step}, "
        f"B={cfg.budget}, {cfg.steps} steps (equal rollout budget), seed {args.seed}, "
        f"learning lr_shared={cfg.lr_shared} lr_own={cfg.lr_own} {cfg.loss_agg}"
    )
    head = (
        f"{'strategy':<15}{'updates':>8}{'eff. ratio':>11}{'expected':>10}{'vs unif.':>9}"
        f"{'max n':>7}{'held-out':>17}{'seconds':>9}"
    )
    print(head)
    for strategy, run, acc, secs in rows:
        eff = effective_ratio(run.steps)
        exp = effective_ratio(run.steps, "expected_effective_ratio")
        rel = f"{100 * (eff / base - 1):+.1f}%" if base and strategy != "uniform" else "-"
        held = f"{100 * acc[0]:.1f}->{100 * acc[-1]:.1f}%" if acc.size else "-"
        print(
            f"{strategy:<15}{len(run.steps):>8}{100 * eff:>10.1f}%{100 * exp:>9.1f}%{rel:>9}"
            f"{max(r['max_n'] for r in run.steps):>7}{held:>17}{secs:>9.2f}"
        )
    print(SIM_ACCURACY_NOTE)
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    from krl.experiment.runner import Plan, Progress, run_loop, run_sim, write_results

    loop = args.backend == "loop"
    wrong = [n for n in (LOOP_ONLY if not loop else SIM_ONLY) if getattr(args, n) is not None]
    if wrong:
        other = "loop" if not loop else "sim"
        print(
            f"error: --{wrong[0].replace('_', '-')} applies to --backend {other} only",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = _sim_config(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    factor = args.baseline_factor if args.baseline_factor is not None else (1.0 if loop else 3.0)
    if not (factor >= 1.0 and math.isfinite(factor)):
        print("error: --baseline-factor must be >= 1", file=sys.stderr)
        return 2
    steps = args.steps if args.steps is not None else (150 if loop else cfg.steps)
    plan = Plan(args.backend, args.strategies, args.seeds, steps, cfg.budget, factor)
    out = args.out or Path("runs/experiments") / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.backend}"
    out.mkdir(parents=True, exist_ok=True)
    command = "krl " + shlex.join(args.argv)
    title = args.title or (
        f"simulator, population {cfg.difficulty}, M={cfg.prompts_per_step}, B={cfg.budget}"
        if not loop
        else f"tiny-model loop, task {args.task or 'reverse'}, "
        f"M={cfg.prompts_per_step}, B={cfg.budget}"
    )
    print(
        f"experiment folder {out}: {len(plan.strategies)} strategies x {len(plan.seeds)} seeds,"
        f" {plan.budget:,} rollouts each (uniform: x{factor:g})",
        flush=True,
    )
    try:
        with Progress(len(plan.strategies) * len(plan.seeds)) as progress:
            if loop:
                run_loop(
                    out, plan, _loop_settings(args, cfg), args.half_life_steps or 0.0, progress
                )
            else:
                run_sim(out, plan, cfg, _backend_factory(args, cfg), progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted; run the same command again to continue ({out})", file=sys.stderr)
        return 130
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_results(out, plan, title, command)
    print((out / "results.md").read_text())
    return 0


def _loop_settings(args: argparse.Namespace, cfg: SimConfig) -> dict[str, object]:
    """The trainer settings this experiment gives every run (None: the trainer's default)."""
    out: dict[str, object] = {
        "prompts_per_step": cfg.prompts_per_step,
        "rollouts_per_prompt": cfg.rollouts_per_prompt,
        "min_n": cfg.min_n,
        "max_n": cfg.max_n,
        "dapo_max_rounds": cfg.dapo_max_rounds,
        "eval_every": args.eval_every or 10,
        "objective": cfg.objective,
        "visit_half_life": cfg.visit_half_life,
    }
    out.update({name: getattr(args, name) for name in LOOP_ONLY})
    return out
