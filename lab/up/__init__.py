"""`krl up`: the whole loop on one machine. Starts the embedded Redis, the allocator, the rollout
service and the trainer as separate processes talking gRPC over loopback, shows progress, stops
everything cleanly on Ctrl-C (the trainer checkpoints first, so `--resume` continues), and at the
end writes the plots and the summary into the run folder.

Each child runs in its own session, so a Ctrl-C reaches only this process, which then stops the
children in order: trainer (checkpoint), rollout, allocator, Redis. Their logs go to
RUN_DIR/logs/. A service that exits while the trainer runs (the allocator, the rollout service or
Redis) stops the run at once with its name, exit status and the end of its log, rather than
leaving the trainer to retry it for minutes; the last checkpoint stays for `--resume`."""

from __future__ import annotations

import json
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from krl.common.procs import ServiceProcess, free_port
from krl.common.redis_server import EmbeddedRedis


@dataclass
class Stack:
    redis: EmbeddedRedis | None = None
    allocator: ServiceProcess | None = None
    rollout: ServiceProcess | None = None
    trainer: ServiceProcess | None = None

    def stop(self, trainer_timeout_s: float = 120.0) -> None:
        for p in (self.trainer, self.rollout, self.allocator):
            if p is not None:
                p.stop(timeout_s=trainer_timeout_s if p is self.trainer else 20.0)
        if self.redis is not None:
            self.redis.stop()

    def died(self) -> ServiceDied | None:
        """The first service the trainer depends on that has exited, if any (each of them
        should live as long as the trainer)."""
        services = (
            ("redis-server", self.redis),
            ("allocator", self.allocator),
            ("rollout service", self.rollout),
        )
        for name, svc in services:
            if svc is not None and svc.proc is not None and svc.proc.poll() is not None:
                return ServiceDied(name, svc.proc.returncode, svc.log_file)
        return None


class ServiceDied(RuntimeError):
    """A service of the run exited while its trainer was running."""

    def __init__(self, name: str, code: int, log: Path | None) -> None:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        super().__init__(f"the {name} {how} while the trainer was running")
        self.name, self.code, self.log = name, code, log


def log_tail(path: Path | None, lines: int = 15) -> str:
    """The last lines of a service's log, indented, or why there are none."""
    if path is None:
        return "  (it kept no log)"
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError as e:
        return f"  (no log: {e.strerror})"
    return "\n".join(f"  {ln}" for ln in text) or "  (empty)"


def event_line(e: dict) -> str | None:
    """A progress line for a run event worth a line of its own (the log has the rest)."""
    ev, step = e.get("event"), e.get("step")
    if ev == "checkpoint":
        return f"checkpoint at step {step}: {e.get('path')}"
    if ev == "resumed":
        return f"resumed at step {step} ({e.get('dropped_rows', 0)} later rows dropped)"
    if ev == "failed":
        return f"FAILED at step {step}: {e.get('error')}"
    if ev == "finished":
        return f"finished at step {step}" + ("" if e.get("complete") else " (stopped early)")
    return None


def _check(stack: Stack) -> None:
    if (dead := stack.died()) is not None:
        raise dead


def _wait(stack: Stack) -> None:
    """Until the trainer exits; ServiceDied when a service it needs exits first."""
    proc = stack.trainer.proc
    while proc.poll() is None:
        _check(stack)
        time.sleep(0.5)


def _follow(run_dir: Path, stack: Stack, settings) -> None:
    """Show progress from the run folder's logs until the trainer exits; ServiceDied when a
    service it needs exits first."""
    from rich.console import Console
    from rich.live import Live
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from krl.rl.runlog import Tail

    console = Console()
    live_ok = console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[stats]}"),
        console=console,
    )
    warm = progress.add_task("warm-up", total=max(settings.warmup(), 1), stats="", visible=False)
    train = progress.add_task("train", total=settings.steps, stats="starting services...")
    last_print = 0
    acc = "-"
    events, metrics = Tail(run_dir / "events.jsonl"), Tail(run_dir / "metrics.jsonl")

    def refresh() -> None:
        nonlocal last_print, acc
        for e in events.new_rows():
            if e["event"] == "warmup":
                progress.update(
                    warm, completed=e["step"], visible=True, stats=f"loss {e['loss']:.3f}"
                )
            elif not live_ok and (line := event_line(e)):
                console.print(line)
        rows = metrics.new_rows()
        steps = [r for r in rows if r["kind"] == "step"]
        evals = [r for r in rows if r["kind"] == "eval"]
        if evals:
            acc = f"{100 * evals[-1]['accuracy'].get('all', 0):.1f}%"
        if steps:
            r = steps[-1]
            stats = (
                f"reward {r['reward']:.3f}  eff {100 * r['effective_rollout_ratio']:.0f}%  "
                f"held-out {acc}  {r['rollouts_per_s'] or 0:.0f} rollouts/s  "
                f"max n {r['max_n']}"
            )
            progress.update(train, completed=r["step"], stats=stats)
            due = r["step"] - last_print >= 10 or r["step"] == settings.steps
            if not live_ok and due and r["step"] != last_print:
                console.print(f"step {r['step']}/{settings.steps}  {stats}")
                last_print = r["step"]

    proc = stack.trainer.proc
    with Live(progress, console=console, refresh_per_second=4) if live_ok else nullcontext():
        try:
            while proc.poll() is None:
                refresh()
                _check(stack)
                time.sleep(0.5 if live_ok else 1.0)
        finally:
            refresh()


def resolve_half_life(run_dir: Path, resume: bool, given: float | None) -> float:
    """The allocator's explicit step half-life for this run (0: off). A run keeps the one it
    started with (RUN_DIR/up.json, beside the trainer's settings.json); a resumed run given
    another is refused, as for the trainer's settings."""
    path = run_dir / "up.json"
    saved = json.loads(path.read_text()).get("half_life_steps") if path.exists() else None
    if resume and saved is not None:
        if given is not None and given != saved:
            raise ValueError(
                "a resumed run keeps its settings; these differ from the run's: "
                f"half_life_steps ({saved!r} -> {given!r})"
            )
        return float(saved)
    value = 0.0 if given is None else float(given)
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"half_life_steps": value}))
    return value


def up(settings, *, replicas: int = 1, half_life_steps: float = 0.0, progress: bool = True) -> int:
    """settings: the trainer's (already resolved against its run folder)."""
    from krl.trainer.report import plot_run, summarize

    run_dir = Path(settings.run_dir)
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = Stack()
    interrupted: list[bool] = []
    t0 = time.monotonic()

    def on_sigint(signum, frame) -> None:
        interrupted.append(True)
        if stack.trainer is not None and stack.trainer.proc is not None:
            stack.trainer.proc.send_signal(signal.SIGTERM)
        if len(interrupted) == 1:
            print(
                "\nstopping: the trainer finishes its step and checkpoints (Ctrl-C again to hurry)",
                file=sys.stderr,
            )
        else:
            raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    code = 1
    trainer_timeout_s = 120.0
    try:
        print(f"run folder {run_dir}  (logs in {logs})", flush=True)
        stack.redis = EmbeddedRedis(run_dir / "redis").start()
        a_port, r_port, t_port = free_port(), free_port(), free_port()
        common = ["--http-port", "0"]
        stack.allocator = ServiceProcess(
            [
                "allocator",
                "--grpc-port",
                str(a_port),
                "--redis-url",
                stack.redis.url,
                "--half-life-steps",
                str(half_life_steps),
                *common,
            ],
            f"127.0.0.1:{a_port}",
            logs / "allocator.log",
            new_session=True,
            die_with_parent=True,
        ).start(timeout_s=60)
        print(f"allocator  127.0.0.1:{a_port}", flush=True)
        rollout_args = ["rollout", "--grpc-port", str(r_port), "--replicas", str(replicas), *common]
        if settings.model != "tiny":
            rollout_args += ["--model", str(settings.model)]
        stack.rollout = ServiceProcess(
            rollout_args,
            f"127.0.0.1:{r_port}",
            logs / "rollout.log",
            new_session=True,
            die_with_parent=True,
        ).start(timeout_s=600)
        print(f"rollout    127.0.0.1:{r_port}", flush=True)
        trainer_args = [
            "trainer",
            "--settings-json",
            str(run_dir / "settings.json"),
            "--grpc-port",
            str(t_port),
            "--allocator",
            f"127.0.0.1:{a_port}",
            "--rollout",
            f"127.0.0.1:{r_port}",
            *common,
        ]
        # a resumed run with a step or two left may finish before its health is polled
        stack.trainer = ServiceProcess(
            trainer_args,
            f"127.0.0.1:{t_port}",
            logs / "trainer.log",
            new_session=True,
            die_with_parent=True,
        ).start(timeout_s=120, exit_ok=True)
        print(f"trainer    127.0.0.1:{t_port}", flush=True)
        if progress:
            _follow(run_dir, stack, settings)
        else:
            _wait(stack)
        code = stack.trainer.proc.wait()
    except ServiceDied as e:
        # the trainer would retry the dead service for minutes: stop it now (it keeps its last
        # checkpoint) and say which service died and how its log ends
        print(f"error: {e}; the end of {e.log}:", file=sys.stderr)
        print(log_tail(e.log), file=sys.stderr)
        trainer_timeout_s = 10.0
        code = 1
    except KeyboardInterrupt:
        code = 130
    except Exception as e:
        print(f"error: {e} (see {logs})", file=sys.stderr)
        code = 1
    finally:
        stack.stop(trainer_timeout_s)
        signal.signal(signal.SIGINT, old)
    wall = time.monotonic() - t0
    if (run_dir / "metrics.jsonl").exists():
        plot_run(run_dir)
        s = summarize(run_dir, wall)
        print((run_dir / "summary.md").read_text())
        budget = settings.rollout_budget
        if interrupted or (
            s["steps"] < settings.steps and not (budget and s["rollouts"] >= budget)
        ):
            print(
                f"stopped at step {s['steps']}; continue with: krl up --resume --run-dir {run_dir}"
            )
    return code
