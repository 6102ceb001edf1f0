"""`krl calibrate`: flags, and the printed table (the work is in calibrate.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SIMS = ("beta:0.3,0.5:4096:300", "levels:0,0.05,0.3,0.7,0.95:1024:200")


def _sim_spec(text: str) -> tuple[str, int, int]:
    """'beta:0.3,0.5:4096:300' -> (difficulty, prompts, steps)."""
    try:
        spec, prompts, steps = text.rsplit(":", 2)
        out = (spec, int(prompts), int(steps))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sim {text!r}: use DIFFICULTY:PROMPTS:STEPS, e.g. beta:0.3,0.5:4096:300"
        ) from None
    if out[1] < 64 or out[2] < 1:
        raise argparse.ArgumentTypeError(f"--sim {text!r}: PROMPTS >= 64 and STEPS >= 1")
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="score value models on recorded traces: log-loss of the next visit's outcome",
        description="Replay traces (a run folder's Redis histories, or simulated runs) and "
        "score each value model's prediction of whether a prompt's next group is informative, "
        "given only the history before it: log-loss, Brier score, and a calibration plot by "
        "decile. Writes OUT/results.md, results.json and calibration.png.",
    )
    p.add_argument(
        "--run",
        type=Path,
        action="append",
        default=[],
        help="a krl up run folder (its redis/ AOF is read from a copy); repeatable",
    )
    p.add_argument(
        "--sim",
        type=_sim_spec,
        action="append",
        default=None,
        help="a simulated trace DIFFICULTY:PROMPTS:STEPS (uniform n = 8, M = 64); "
        f"repeatable (default, without --run: {' and '.join(DEFAULT_SIMS)})",
    )
    p.add_argument("--seed", type=int, default=0, help="simulated traces' seed")
    p.add_argument("--models", default=None, help="comma list (default: all)")
    p.add_argument("--out", type=Path, default=Path("runs/calibration"), help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from krl.experiment import calibrate as cal

    names = [m.strip() for m in (args.models or ",".join(cal.MODELS)).split(",") if m.strip()]
    bad = [m for m in names if m not in cal.MODELS]
    if bad or not names:
        print(f"error: unknown model {bad}: use any of {','.join(cal.MODELS)}", file=sys.stderr)
        return 2
    models = {m: cal.MODELS[m] for m in names}
    sims = (
        args.sim
        if args.sim is not None
        else ([] if args.run else list(map(_sim_spec, DEFAULT_SIMS)))
    )
    traces = []
    try:
        for run_dir in args.run:
            traces += cal.trace_from_redis(run_dir)
    except (FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for spec, prompts, steps in sims:
        print(f"simulating {spec}, {prompts} prompts, {steps} steps ...", flush=True)
        traces.append(cal.trace_from_sim(spec, prompts, steps, args.seed))
    results = {}
    for t in traces:
        print(
            f"replaying {t.name}: {t.step.size:,} visits of {t.prompts:,} prompts ...", flush=True
        )
        results[t.name] = cal.replay(t, models)
    md = cal.write_report(args.out, results)
    print(md.read_text())
    return 0
