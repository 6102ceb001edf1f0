"""The end of a run: plots (PNG) and a short summary (summary.md, summary.json), all from the
run folder's metrics.jsonl, so they can be rebuilt at any time with `krl report RUN_DIR`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from krl.rl.runlog import read_rows

PLOTS = ("reward.png", "heldout_accuracy.png", "effective_ratio.png", "n_per_prompt.png")


def _split(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    return [r for r in rows if r.get("kind") == "step"], [
        r for r in rows if r.get("kind") == "eval"
    ]


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    if len(x) < k or k < 2:
        return x
    c = np.convolve(x, np.ones(k) / k, mode="valid")
    return np.concatenate([np.full(k - 1, np.nan), c])


def plot_run(run_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, evals = _split(read_rows(run_dir / "metrics.jsonl"))
    if not steps:
        return []
    title = run_dir.name
    x = np.array([r["step"] for r in steps])
    k = max(1, len(steps) // 20)
    out: list[Path] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        out.append(run_dir / name)

    fig, ax = plt.subplots(figsize=(7, 4))
    reward = np.array([r["reward"] for r in steps])
    ax.plot(x, reward, alpha=0.3, label="per step")
    ax.plot(x, _smooth(reward, k), label=f"mean of {k}")
    ax.set(xlabel="step", ylabel="mean reward of the step's rollouts", title=f"Reward - {title}")
    ax.legend()
    save(fig, "reward.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    if evals:
        ex = [r["step"] for r in evals]
        keys = sorted(
            {k for r in evals for k in r["accuracy"] if k != "all"},
            key=lambda s: int(s[1:]) if s[1:].isdigit() else 0,
        )
        for key in keys:
            ax.plot(
                ex,
                [r["accuracy"].get(key, np.nan) for r in evals],
                marker=".",
                alpha=0.6,
                label=key,
            )
        ax.plot(
            ex,
            [r["accuracy"].get("all", np.nan) for r in evals],
            marker="o",
            color="black",
            linewidth=2.5,
            label="all",
        )
        ax.set_ylim(-0.02, 1.02)
        ax.legend(ncol=2, fontsize=8)
    ax.set(xlabel="step", ylabel="greedy accuracy", title=f"Held-out accuracy - {title}")
    save(fig, "heldout_accuracy.png")

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (
        ("effective_rollout_ratio", "effective rollouts"),
        ("effective_prompt_ratio", "effective prompts"),
        ("all_correct", "all-correct prompts"),
        ("all_wrong", "all-wrong prompts"),
    ):
        y = np.array([r[key] for r in steps])
        ax.plot(x, _smooth(y, k), label=label)
    ax.set_ylim(-0.02, 1.02)
    ax.set(xlabel="step", ylabel="share", title=f"Exploration - {title} (mean of {k} steps)")
    ax.legend(fontsize=8)
    save(fig, "effective_ratio.png")

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    nmax = max(int(n) for r in steps for n in r["n_counts"])
    edges = np.arange(0, nmax + 2)
    bins = max(1, min(40, len(steps)))
    chunks = np.array_split(np.arange(len(steps)), bins)
    grid = np.zeros((nmax + 1, len(chunks)))
    for j, idx in enumerate(chunks):
        for i in idx:
            for n, c in steps[i]["n_counts"].items():
                grid[int(n), j] += c
        grid[:, j] /= max(grid[:, j].sum(), 1)
    x0, x1 = (x[0], x[-1]) if x[-1] > x[0] else (x[0] - 0.5, x[0] + 0.5)  # a one-step run
    im = ax.imshow(
        grid, aspect="auto", origin="lower", cmap="viridis", extent=(x0, x1, -0.5, nmax + 0.5)
    )
    fig.colorbar(im, ax=ax, label="share of prompts")
    ax.set(
        xlabel="step",
        ylabel="rollouts given to a prompt (n)",
        title="Distribution of n over training",
    )
    total = np.zeros(nmax + 1)
    for r in steps:
        for n, c in r["n_counts"].items():
            total[int(n)] += c
    ax2.bar(edges[:-1], total / total.sum())
    ax2.set(xlabel="n", ylabel="share of prompts", title=f"All steps (max n = {nmax})")
    save(fig, "n_per_prompt.png")
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def summarize(run_dir: Path, wall_s: float | None = None) -> dict:
    steps, evals = _split(read_rows(run_dir / "metrics.jsonl"))
    settings = {}
    if (run_dir / "settings.json").exists():
        settings = json.loads((run_dir / "settings.json").read_text())
    tail = steps[-max(1, len(steps) // 5) :]
    head = steps[: max(1, len(steps) // 5)]
    phases = {
        p: sum(r.get(f"t_{p}", 0) or 0 for r in steps)
        for p in ("allocate", "generate", "train", "weight_sync")
    }
    out = {
        "run": run_dir.name,
        "strategy": settings.get("strategy"),
        "task": settings.get("task"),
        "steps": steps[-1]["step"] if steps else 0,
        "wall_s": round(wall_s, 1) if wall_s else None,
        "heldout_before": evals[0]["accuracy"] if evals else None,
        "heldout_after": evals[-1]["accuracy"] if evals else None,
        "effective_rollout_ratio": _mean(steps, "effective_rollout_ratio"),
        "effective_rollout_ratio_first_fifth": _mean(head, "effective_rollout_ratio"),
        "effective_rollout_ratio_last_fifth": _mean(tail, "effective_rollout_ratio"),
        "effective_prompt_ratio": _mean(steps, "effective_prompt_ratio"),
        "reward_first_fifth": _mean(head, "reward"),
        "reward_last_fifth": _mean(tail, "reward"),
        "rollouts": int(sum(r["rollouts"] for r in steps)),
        "tokens": int(sum(r["tokens"] for r in steps)),
        "max_n": max((r["max_n"] for r in steps), default=0),
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
        "rollouts_per_s": _mean(steps, "rollouts_per_s"),
    }
    (run_dir / "summary.json").write_text(json.dumps(out, indent=1))
    (run_dir / "summary.md").write_text(_markdown(out))
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _markdown(s: dict) -> str:
    lines = [
        f"# Run {s['run']}",
        "",
        f"- strategy **{s['strategy']}**, task {s['task']}, {s['steps']} steps"
        + (f", wall time {s['wall_s'] / 60:.1f} min" if s["wall_s"] else ""),
        "",
    ]
    b, a = s["heldout_before"] or {}, s["heldout_after"] or {}
    if a:
        lines += ["| held-out greedy accuracy | before | after |", "| --- | --- | --- |"]
        for key in a:
            lines.append(f"| {key} | {_pct(b.get(key))} | {_pct(a.get(key))} |")
        lines.append("")
    lines += [
        f"- effective-rollout ratio: {_pct(s['effective_rollout_ratio'])} over the run "
        f"({_pct(s['effective_rollout_ratio_first_fifth'])} in the first fifth, "
        f"{_pct(s['effective_rollout_ratio_last_fifth'])} in the last)",
        f"- effective-prompt ratio: {_pct(s['effective_prompt_ratio'])}",
        f"- reward: {_pct(s['reward_first_fifth'])} -> {_pct(s['reward_last_fifth'])} "
        "(first fifth -> last fifth)",
        f"- rollouts {s['rollouts']:,}, completion tokens {s['tokens']:,}, largest n {s['max_n']}",
        "- time in allocate / generate / train / weight sync: "
        + " / ".join(f"{v:.1f}s" for v in s["phase_seconds"].values()),
        "",
        "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS),
        "",
    ]
    return "\n".join(lines)
