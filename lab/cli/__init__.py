"""The `krl` command. Thin: parse arguments, import the heavy parts late (fast --help)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path


def _allocator_parser(sub: argparse._SubParsersAction) -> None:
    from krl.allocator.settings import AllocatorSettings
    from krl.common.flags import add_settings_flags

    p = sub.add_parser(
        "allocator",
        help="run the allocator service (gRPC + HTTP + metrics; embedded Redis if no REDIS_URL)",
        description="Run the allocator. Settings: defaults < --config TOML < KRL_ALLOCATOR_* "
        "environment (and REDIS_URL) < these flags (one per setting).",
    )
    p.add_argument("--config", type=Path, help="TOML file with allocator settings")
    names = add_settings_flags(p, AllocatorSettings)
    p.set_defaults(func=_run_allocator, setting_names=names)


def _run_allocator(args: argparse.Namespace) -> int:
    from krl.allocator.app import serve
    from krl.allocator.settings import AllocatorSettings
    from krl.common.flags import given

    overrides = given(args, args.setting_names)
    return _serve("allocator", AllocatorSettings, serve, args.config, overrides)


def _serve(name: str, settings_cls, serve, config: Path | None, overrides: dict) -> int:
    """Resolve a service's settings once, log them (secrets masked), run it until a signal."""
    import logging

    from krl.common.config import load_settings
    from krl.common.lifecycle import StartupError
    from krl.common.logs import setup_logging

    settings = load_settings(settings_cls, config, overrides)
    setup_logging(settings.log_level)
    logging.getLogger("krl").info("%s settings: %s", name, json.dumps(settings.public_dict()))
    try:
        asyncio.run(serve(settings))
    except StartupError as e:
        print(f"krl {name}: cannot start: {e}", file=sys.stderr)
        return 2
    return 0


def _rollout_parser(sub: argparse._SubParsersAction) -> None:
    from krl.common.flags import add_settings_flags
    from krl.rollout.settings import RolloutSettings

    p = sub.add_parser(
        "rollout",
        help="run the rollout service (engines hf | vllm | openai; gRPC + /metrics)",
        description="Run the rollout service. Settings: defaults < --config TOML < KRL_ROLLOUT_* "
        "environment (engine fields as KRL_ROLLOUT_ENGINE__MODEL etc.) < these flags (one per "
        "setting; the engine's through the shortcuts below). With no engine given: hf on the "
        "tiny model in .krl/models/tiny (built there if missing).",
    )
    p.add_argument("--config", type=Path, help="TOML file with rollout settings ([engine] table)")
    names = add_settings_flags(p, RolloutSettings)
    e = p.add_argument_group("engine (the [engine] table; other engine fields: TOML or env)")
    e.add_argument("--engine", choices=["hf", "vllm", "openai"], help="engine type")
    e.add_argument("--model", help="local model folder (hf, vllm) or served model name (openai)")
    e.add_argument("--base-url", help="openai engine: server root, e.g. http://host:8000/v1")
    e.add_argument("--tokenizer", type=Path, help="openai engine: local tokenizer folder")
    p.set_defaults(func=_run_rollout, setting_names=names)


def _run_rollout(args: argparse.Namespace) -> int:
    from krl.common.flags import given
    from krl.rollout.app import serve
    from krl.rollout.settings import RolloutSettings

    engine = {
        "type": args.engine,
        "model": args.model,
        "base_url": args.base_url,
        "tokenizer": args.tokenizer,
    }
    overrides = given(args, args.setting_names)
    if engine := {k: v for k, v in engine.items() if v is not None}:
        overrides["engine"] = engine
    return _serve("rollout", RolloutSettings, serve, args.config, overrides)


# Set by `krl up` itself for the trainer it starts (ports, targets), so not flags of `up`.
UP_SETS = frozenset({"host", "grpc_port", "http_port", "allocator", "rollout", "grace_s"})


def _train_flags(p: argparse.ArgumentParser, skip: frozenset[str] = frozenset()) -> None:
    from krl.common.flags import add_settings_flags
    from krl.trainer.settings import TrainerSettings

    p.add_argument("--config", type=Path, help="TOML file with trainer settings")
    names = add_settings_flags(
        p,
        TrainerSettings,
        skip=skip,
        help_overrides={"run_dir": "run folder (default runs/<time>-<strategy>)"},
    )
    p.set_defaults(setting_names=names)


def _train_overrides(args: argparse.Namespace) -> dict:
    from krl.common.flags import given

    return given(args, args.setting_names)


def _trainer_settings(config: Path | None, overrides: dict):
    """Resolve and check the trainer's settings and its run folder (errors before any start)."""
    from krl.common.config import load_settings
    from krl.trainer.settings import TrainerSettings, default_run_dir, resolve_run

    s = load_settings(TrainerSettings, config, overrides)
    explicit = set(s.model_fields_set)
    if "run_dir" not in explicit:
        if s.resume:
            raise ValueError("--resume needs --run-dir (the run folder to continue)")
        s = s.model_copy(update={"run_dir": default_run_dir(s.strategy)})
    return resolve_run(s, explicit)


def _settings_error(e: Exception) -> int:
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "settings"
            print(f"error: {loc}: {err['msg']}", file=sys.stderr)
    else:
        print(f"error: {e}", file=sys.stderr)
    return 2


def _trainer_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trainer",
        help="run the trainer: the GRPO loop against an allocator and a rollout service",
        description="Run the training loop. Settings: defaults < --config TOML < KRL_TRAINER_* "
        "environment < these flags. Needs a running allocator and rollout service (krl up "
        "starts all of them). Writes metrics.jsonl, checkpoints and events into the run folder.",
    )
    _train_flags(p)
    p.add_argument("--settings-json", type=Path, help="settings saved by krl up (internal)")
    p.set_defaults(func=_run_trainer)


def _run_trainer(args: argparse.Namespace) -> int:
    import logging

    from krl.common.config import load_settings
    from krl.common.logs import setup_logging

    overrides = _train_overrides(args)
    try:
        if args.settings_json is not None:
            from krl.trainer.settings import TrainerSettings

            settings = load_settings(TrainerSettings, args.settings_json, overrides)
        else:
            settings = _trainer_settings(args.config, overrides)
    except Exception as e:
        return _settings_error(e)
    from krl.trainer.app import serve
    from krl.trainer.settings import dump_settings

    dump_settings(settings.run_dir, settings)
    setup_logging(settings.log_level)
    logging.getLogger("krl").info("trainer settings: %s", json.dumps(settings.public_dict()))
    return asyncio.run(serve(settings))


def _up_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "up",
        help="the whole loop: embedded Redis, allocator, rollout and trainer processes",
        description="Start Redis (embedded), the allocator, the rollout service and the trainer "
        "as separate processes on loopback, follow the run, and write plots and a summary to "
        "the run folder. Ctrl-C stops it after a checkpoint; --resume --run-dir continues it. "
        "Trainer settings as for `krl trainer` (--config, KRL_TRAINER_*, flags).",
    )
    _train_flags(p, skip=UP_SETS)
    p.add_argument("--replicas", type=int, default=1, help="rollout engine replicas (default 1)")
    p.add_argument(
        "--half-life-steps",
        type=float,
        default=None,
        help="allocator: explicit evidence half-life in steps (default 0: off; a resumed run "
        "keeps its own; evidence is counted per visit of a prompt, which survives any "
        "dataset size)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.set_defaults(func=_run_up)


def _run_up(args: argparse.Namespace) -> int:
    from krl.trainer.settings import dump_settings
    from krl.up import resolve_half_life, up

    try:
        settings = _trainer_settings(args.config, _train_overrides(args))
        half_life = resolve_half_life(settings.run_dir, settings.resume, args.half_life_steps)
    except Exception as e:
        return _settings_error(e)
    dump_settings(settings.run_dir, settings)
    return up(
        settings,
        replicas=args.replicas,
        half_life_steps=half_life,
        progress=not args.no_progress,
    )


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a run folder's plots and summary")
    p.add_argument("run_dir", type=Path, help="run folder (holds metrics.jsonl)")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from krl.trainer.report import plot_run, summarize

    if not (args.run_dir / "metrics.jsonl").exists():
        print(f"error: {args.run_dir} has no metrics.jsonl", file=sys.stderr)
        return 2
    for path in plot_run(args.run_dir):
        print(path)
    summarize(args.run_dir)
    print((args.run_dir / "summary.md").read_text())
    return 0


def _solve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solve",
        help="solve one allocation problem given as JSON (no service, no Redis)",
        description='Reads {"budget", "min_n", "max_n", "mode", "fallback", "prompts": [{"id", '
        '"successes", "trials", "mean_tokens"}]} and prints {"allocation", "objective", "solve_ms"}.',
    )
    p.add_argument("file", nargs="?", default="-", help="JSON file, or - for standard input")
    p.set_defaults(func=_run_solve)


def _run_solve(args: argparse.Namespace) -> int:
    from krl.common.errors import KrlError
    from krl.tools.solve_json import run

    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        print(f"error: $: not valid JSON: {e}", file=sys.stderr)
        return 2
    try:
        out = run(doc)
    except KrlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


def _bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (print figures; not tests)")
    bsub = p.add_subparsers(dest="bench", required=True)
    s = bsub.add_parser("solver", help="exact solver vs the paper's DP on the same instances")
    s.add_argument("--repeats", type=int, default=21, help="timed solves per size (median kept)")
    s.add_argument("--dp-max-prompts", type=int, default=1024, help="run the DP up to this size")
    s.add_argument("--seed", type=int, default=0, help="seed of the random instances (default 0)")
    s.set_defaults(func=_run_bench, which="solver")
    a = bsub.add_parser("allocator", help="Allocate / ReportOutcomes latency over loopback gRPC")
    a.add_argument("--prompts", type=int, default=1024, help="prompts per call (default 1024)")
    a.add_argument(
        "--requests", type=int, default=200, help="Allocate + report rounds timed (default 200)"
    )
    a.add_argument("--target", help="an allocator already running (host:port); default: start one")
    a.set_defaults(func=_run_bench, which="allocator")
    load = bsub.add_parser("load", help="bounded load: concurrent clients calling Allocate")
    load.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    load.add_argument("--seconds", type=float, default=10.0, help="duration (bounded to 120)")
    load.add_argument("--prompts", type=int, default=256, help="prompts per call (default 256)")
    load.add_argument(
        "--target", help="an allocator already running (host:port); default: start one"
    )
    load.set_defaults(func=_run_bench, which="load")
    soak = bsub.add_parser(
        "soak",
        help="bounded soak: trainer-like clients on separate namespaces against one allocator, "
        "its embedded Redis killed halfway; checks nothing lost or counted twice, prints RSS "
        "slope and latency by interval (exit 1 on a loss)",
    )
    soak.add_argument(
        "--appendfsync",
        choices=("always", "everysec"),
        default="always",
        help="the embedded Redis's fsync policy (default always: nothing acknowledged may be "
        "lost; everysec, the allocator's default: only what was acknowledged in the 2.5 s "
        "before the kill may be)",
    )
    soak.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    soak.add_argument("--clients", type=int, default=3, help="concurrent clients (default 3)")
    soak.add_argument("--prompts", type=int, default=2048, help="dataset size per client")
    soak.add_argument("--progress", action="store_true", help="a line every 5 s")
    soak.set_defaults(func=_run_bench, which="soak")
    r = bsub.add_parser(
        "rollout", help="rollout service tokens/s vs the same engine called directly"
    )
    r.add_argument("--prompts", type=int, default=64, help="prompts per batch (default 64)")
    r.add_argument("--n", type=int, default=8, help="rollouts per prompt")
    r.add_argument(
        "--max-new-tokens", type=int, default=32, help="tokens per completion (default 32)"
    )
    r.add_argument("--max-batch-rows", type=int, default=256, help="rows per engine call")
    r.add_argument("--rounds", type=int, default=7, help="timed rounds per path (median kept)")
    r.add_argument("--threads", type=int, default=2, help="torch threads, both paths")
    r.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    r.add_argument("--model", help="local model folder (default: a fresh tiny model)")
    r.set_defaults(func=_run_bench, which="rollout")


def _run_bench(args: argparse.Namespace) -> int:
    if args.which == "rollout":
        from krl.rollout.bench import bench_rollout

        return bench_rollout(args)
    if args.which == "soak":
        from krl.tools.soak import bench_soak

        return bench_soak(args)
    from krl.tools import allocator_bench as bench

    return {
        "solver": bench.bench_solver,
        "allocator": bench.bench_allocator,
        "load": bench.bench_load,
    }[args.which](args)


def build_parser() -> argparse.ArgumentParser:
    from krl import __version__

    parser = argparse.ArgumentParser(
        prog="krl", description="knapsack-rl: rollout allocation for RL of LMs"
    )
    parser.add_argument("--version", action="version", version=f"knapsack-rl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _allocator_parser(sub)
    _rollout_parser(sub)
    _trainer_parser(sub)
    _up_parser(sub)
    _report_parser(sub)
    _solve_parser(sub)
    _bench_parser(sub)
    from krl.experiment.calibrate_cli import add_parser as add_calibrate
    from krl.experiment.cli import add_parsers
    from krl.experiment.pool import add_parser as add_pool

    add_parsers(sub)
    add_pool(sub)
    add_calibrate(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return int(args.func(args) or 0)
