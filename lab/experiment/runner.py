"""Run strategies x seeds and write the experiment folder:

    OUT/runs/<strategy>-seed<k>/     one run: metrics.jsonl (the trainer's row format), and for
                                     the loop backend the whole `krl up` run folder (its
                                     settings.json), for the simulator done.json (its config)
    OUT/results.json, OUT/results.md the table (mean ± sd over seeds) and the figures' links
    OUT/*.png                        the figures (plots.py)

Running the same command again skips finished runs and resumes unfinished loop runs from their
checkpoints, so an interrupted experiment continues where it stopped. A run folder made with
other settings than the command's is refused before anything runs, never reported as this
command's run."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from krl.experiment.analysis import RunCurves, learning_table, markdown_table, summarize
from krl.sim.engine import SimConfig, simulate


@dataclass(frozen=True)
class Plan:
    backend: str  # "sim" | "loop"
    strategies: tuple[str, ...]
    seeds: tuple[int, ...]
    steps: int
    step_budget: int  # B: rollouts of one uniform step
    baseline_factor: float = 1.0
    """uniform runs this many times the budget, so the compute it needs to match can be read."""

    @property
    def budget(self) -> int:
        return self.steps * self.step_budget

    def steps_for(self, strategy: str) -> int:
        return round(self.steps * self.baseline_factor) if strategy == "uniform" else self.steps


def run_name(strategy: str, seed: int) -> str:
    return f"{strategy}-seed{seed}"


SOLVE_SETTINGS = ("objective", "visit_half_life", "half_life_steps", "min_n", "max_n")
"""Settings only a knapsack solve reads (uniform and dapo give every prompt budget / M): a
uniform or dapo run is the same run whatever their values, so such a baseline can be shared by
experiments of several objectives or bounds on n."""


def _same(a: object, b: object) -> bool:
    if type(a) in (int, float) and type(b) in (int, float):  # not bools
        return float(a) == float(b)  # type: ignore[arg-type]
    return a == b


def differences(saved: dict, wanted: dict) -> list[str]:
    """'name (saved -> wanted)' for each wanted setting that the saved ones do not match."""
    return [
        f"{k} ({saved.get(k)!r} -> {v!r})" for k, v in wanted.items() if not _same(saved.get(k), v)
    ]


def refuse_other_settings(mismatched: Sequence[tuple[Path, list[str]]]) -> None:
    """Stop before any run when a run folder this command would skip or resume was made with
    other settings: its figures would be reported as this command's."""
    if not mismatched:
        return
    lines = [f"  {folder}: {', '.join(diffs)}" for folder, diffs in mismatched[:5]]
    if len(mismatched) > 5:
        lines.append(f"  and {len(mismatched) - 5} more")
    raise RuntimeError(
        f"{len(mismatched)} run folder(s) hold runs made with other settings than this "
        "command's:\n" + "\n".join(lines) + "\nuse another --out (a baseline made under other "
        "solve settings can be linked in: scripts/results.sh shows how), or remove those "
        "folders to run them again"
    )


def _write_rows(path: Path, rows: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def load_runs(out: Path, plan: Plan) -> list[RunCurves]:
    from krl.rl.runlog import read_rows

    runs = []
    for strategy in plan.strategies:
        for seed in plan.seeds:
            f = out / "runs" / run_name(strategy, seed) / "metrics.jsonl"
            if f.exists():
                runs.append(RunCurves.from_rows(strategy, seed, read_rows(f)))
    return runs


class Progress:
    """A rich display on a terminal; one line per finished run and every tenth of a run
    otherwise (CI logs)."""

    def __init__(self, total_runs: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as RichProgress

        self.console = Console()
        self.live = self.console.is_terminal
        self.bar = RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            disable=not self.live,
        )
        self.runs = self.bar.add_task("runs", total=total_runs, stats="")
        self.cur = self.bar.add_task("", total=1, stats="")
        self._last = 0

    def __enter__(self) -> Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start_run(self, name: str, total: int) -> None:
        self.bar.reset(self.cur, total=total, description=name, stats="")
        self._name, self._total, self._last = name, total, 0

    def step(self, done: int, stats: str) -> None:
        self.bar.update(self.cur, completed=done, stats=stats)
        if not self.live and done - self._last >= max(1, self._total // 10):
            self.console.print(f"  {self._name}: {done}/{self._total}  {stats}")
            self._last = done

    def end_run(self, note: str) -> None:
        self.bar.advance(self.runs)
        if not self.live:
            self.console.print(f"done {self._name}: {note}")


def _stats(row: dict, budget: int) -> str:
    return (
        f"eff {100 * row['effective_rollout_ratio']:.0f}%  max n {row['max_n']}  "
        f"rollouts {row['rollouts_total'] / budget:.1f} B"
    )


def run_sim(
    out: Path, plan: Plan, cfg: SimConfig, backend_factory: Callable[[], object], progress: Progress
) -> None:
    from krl.rl.strategies import SOLVED, parse_strategy

    def config(strategy: str) -> dict:
        out = json.loads(json.dumps(asdict(replace(cfg, steps=plan.steps_for(strategy)))))
        if SOLVED[parse_strategy(strategy)] is None:
            out = {k: v for k, v in out.items() if k not in SOLVE_SETTINGS}
        return out

    mismatched = []
    for strategy in plan.strategies:
        for seed in plan.seeds:
            done = out / "runs" / run_name(strategy, seed) / "done.json"
            if done.exists():  # folders from before configs were recorded are not checked
                saved = json.loads(done.read_text()).get("config")
                if saved is not None and (diffs := differences(saved, config(strategy))):
                    mismatched.append((done.parent, diffs))
    refuse_other_settings(mismatched)
    backend = backend_factory()
    try:
        for strategy in plan.strategies:
            for seed in plan.seeds:
                name = run_name(strategy, seed)
                folder = out / "runs" / name
                if (folder / "done.json").exists():
                    progress.start_run(name, 1)
                    progress.end_run("already done")
                    continue
                steps = plan.steps_for(strategy)
                progress.start_run(name, steps)

                def on_step(row: dict, steps=steps) -> None:
                    progress.step(
                        min(steps, round(row["rollouts_total"] / plan.step_budget)),
                        _stats(row, plan.step_budget),
                    )

                # every strategy stops at steps x B rollouts (dapo's updates cost more each)
                res = simulate(
                    replace(cfg, steps=steps),
                    strategy,
                    seed,
                    backend,  # type: ignore[arg-type]
                    on_step=on_step,
                    rollout_budget=plan.step_budget * steps,
                )
                _write_rows(folder / "metrics.jsonl", res.rows)
                (folder / "done.json").write_text(
                    json.dumps({"seconds": res.seconds, "config": config(strategy)})
                )
                progress.end_run(f"{res.seconds:.1f} s")
    finally:
        backend.close()  # type: ignore[attr-defined]


def run_loop(
    out: Path, plan: Plan, settings: dict[str, object], half_life_steps: float, progress: Progress
) -> None:
    """Each run is a `krl up` child (own processes, own embedded Redis) given the trainer
    settings (None: the trainer's default), its output in runs/<name>/experiment.log; progress
    comes from its metrics.jsonl."""
    from krl.rl.runlog import Tail

    refuse_other_settings(_reused_runs(out, plan, settings, half_life_steps))
    train_args = up_flags(settings)
    for strategy in plan.strategies:
        for seed in plan.seeds:
            name = run_name(strategy, seed)
            folder = out / "runs" / name
            steps = plan.steps_for(strategy)
            budget = plan.step_budget * steps
            summary = folder / "summary.json"
            if summary.exists() and _complete(json.loads(summary.read_text()), steps, budget):
                progress.start_run(name, 1)
                progress.end_run("already done")
                continue
            resume = (folder / "settings.json").exists()
            args = [
                sys.executable,
                "-m",
                "krl.cli",
                "up",
                "--no-progress",
                "--run-dir",
                str(folder),
                "--half-life-steps",
                str(half_life_steps),
            ]
            if resume:
                args += ["--resume", "--steps", str(steps), "--rollout-budget", str(budget)]
            else:
                args += [
                    *train_args,
                    "--strategy",
                    strategy,
                    "--seed",
                    str(seed),
                    "--steps",
                    str(steps if strategy != "dapo" else 10 * steps),
                    "--rollout-budget",
                    str(budget),
                ]
            folder.mkdir(parents=True, exist_ok=True)
            progress.start_run(name, steps)
            t0 = time.monotonic()
            with open(folder / "experiment.log", "ab") as log:
                log.write(("$ " + shlex.join(args) + "\n").encode())
                log.flush()
                proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
                tail = Tail(folder / "metrics.jsonl")
                try:
                    while proc.poll() is None:
                        _follow(tail, progress, plan.step_budget, steps)
                        time.sleep(1.0)
                    _follow(tail, progress, plan.step_budget, steps)
                except KeyboardInterrupt:
                    proc.send_signal(2)  # krl up checkpoints and stops its children
                    proc.wait()
                    raise
            if proc.returncode != 0:
                raise RuntimeError(
                    f"run {name} failed (exit {proc.returncode}); see "
                    f"{folder / 'experiment.log'} and {folder / 'logs'}"
                )
            progress.end_run(f"{(time.monotonic() - t0) / 60:.1f} min")


def up_flags(settings: dict[str, object]) -> list[str]:
    """`krl up` flags for the settings given (a None is left to the trainer's default)."""
    out: list[str] = []
    for k, v in settings.items():
        if v is not None:
            out += ["--" + k.replace("_", "-"), str(v)]
    return out


def _reused_runs(
    out: Path, plan: Plan, settings: dict[str, object], half_life_steps: float = 0.0
) -> list[tuple[Path, list[str]]]:
    """The run folders this command would skip or resume whose saved settings (the trainer's
    settings.json, krl up's up.json) differ from the ones it sets (what may change on a resume,
    and a solve setting of a run without a solve, aside)."""
    from krl.rl.strategies import SOLVED, parse_strategy
    from krl.trainer.settings import RESUMABLE_CHANGES, TrainerSettings

    fields = TrainerSettings.model_fields
    given = {
        k: v if v is not None else fields[k].default
        for k, v in settings.items()
        if k not in RESUMABLE_CHANGES
    }
    mismatched = []
    for strategy in plan.strategies:
        solves = SOLVED[parse_strategy(strategy)] is not None
        for seed in plan.seeds:
            folder = out / "runs" / run_name(strategy, seed)
            if not (folder / "settings.json").exists():
                continue
            wanted = {
                "strategy": strategy,
                "seed": seed,
                **given,
                "half_life_steps": half_life_steps,
            }
            if not solves:
                wanted = {k: v for k, v in wanted.items() if k not in SOLVE_SETTINGS}
            saved = {"half_life_steps": 0.0}  # a run from before up.json ran without one
            for name in ("settings.json", "up.json"):
                if (folder / name).exists():
                    saved.update(json.loads((folder / name).read_text()))
            if diffs := differences(saved, json.loads(json.dumps(wanted))):
                mismatched.append((folder, diffs))
    return mismatched


def _follow(tail, progress: Progress, step_budget: int, steps: int) -> None:
    rows = [r for r in tail.new_rows() if r.get("kind") == "step"]
    if rows:
        r = rows[-1]
        progress.step(
            min(steps, round(r.get("rollouts_total", 0) / step_budget)), _stats(r, step_budget)
        )


def _complete(summary: dict, steps: int, budget: int) -> bool:
    return summary.get("steps", 0) >= steps or summary.get("rollouts", 0) >= budget


def write_results(out: Path, plan: Plan, title: str, command: str) -> dict:
    from krl.experiment.plots import plot_experiment

    runs = load_runs(out, plan)
    summaries = summarize(runs, plan.budget)
    order = {s: i for i, s in enumerate(plan.strategies)}
    summaries.sort(key=lambda s: order.get(s.strategy, 99))
    figures = plot_experiment(out, runs, summaries, plan.budget, plan.step_budget, title)
    table = markdown_table(summaries)
    results = {
        "plan": asdict(plan),
        "budget": plan.budget,
        "title": title,
        "command": command,
        "strategies": [s.as_dict() for s in summaries],
    }
    (out / "results.json").write_text(json.dumps(results, indent=1))
    md = [
        f"# {title}",
        "",
        f"`{command}`",
        "",
        f"Equal budget: {plan.budget:,} rollouts per run ({plan.steps} steps × {plan.step_budget}"
        f"); mean ± sd over seeds {', '.join(map(str, plan.seeds))}.",
        "",
        *(
            []
            if plan.backend == "loop"
            else [
                "Held-out accuracy here is the simulator's learning model, not a policy's: it "
                "cannot judge an objective that matches that model (docs/SIMULATOR.md).",
                "",
            ]
        ),
        table,
        "",
        "What the policy learned at the equal budget (uniform's rows cut at it):",
        "",
        learning_table(summaries),
        "",
        *[f"![{p.stem}]({p.name})" for p in figures],
        "",
    ]
    (out / "results.md").write_text("\n".join(md))
    return results
