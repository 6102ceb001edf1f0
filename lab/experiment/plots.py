"""An experiment's figures: effective-rollout ratio over training, held-out accuracy against
rollouts consumed, the distribution of n per prompt and the largest n given. Every x axis is in
rollouts consumed divided by the per-step budget B (= steps of the uniform baseline), so
strategies that spend rollouts differently per update (dapo) line up at equal compute."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from krl.experiment.analysis import RunCurves, StrategySummary

COLORS = {
    "uniform": "#7f7f7f",
    "knapsack-eb": "#9467bd",
    "knapsack-paper": "#1f77b4",
    "dapo": "#2ca02c",
    "knapsack-dapo": "#ff7f0e",
    "knapsack-probe": "#8c564b",
}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(runs: Sequence[RunCurves], budget: int, key, points: int = 60):
    """Per strategy: common x (in budgets) and the per-seed curves interpolated onto it."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    by: dict[str, list[RunCurves]] = {}
    for r in runs:
        by.setdefault(r.strategy, []).append(r)
    for strategy, rs in by.items():
        curves = [key(r) for r in rs]
        curves = [(x, y) for x, y in curves if x.size >= 2]
        if not curves:
            continue
        top = min(float(x[-1]) for x, _ in curves)
        grid = np.linspace(0, top, points)
        ys = np.array([np.interp(grid, x, y) for x, y in curves])
        out[strategy] = (grid, ys)
    return out


def _ci(ys: np.ndarray) -> np.ndarray:
    """Half-width of the 95% t-interval of the mean over rows, per column."""
    from scipy.stats import t

    k = ys.shape[0]
    return t.ppf(0.975, k - 1) * ys.std(axis=0, ddof=1) / np.sqrt(k)


def _bands(ax, data, budget: int, ci: bool = False) -> None:
    """Mean over seeds with a band: min-max, or the 95% interval of the mean (ci)."""
    for strategy, (x, ys) in data.items():
        c = COLORS.get(strategy)
        mean = ys.mean(axis=0)
        ax.plot(x / budget, mean, color=c, label=f"{strategy} ({ys.shape[0]} seeds)")
        if ys.shape[0] > 1:
            lo, hi = (mean - _ci(ys), mean + _ci(ys)) if ci else (ys.min(0), ys.max(0))
            ax.fill_between(x / budget, lo, hi, color=c, alpha=0.15)


def _paired_difference(runs: Sequence[RunCurves], budget: int, points: int = 60):
    """Per strategy other than uniform: accuracy minus uniform's on the same seed, both
    interpolated onto a common grid of rollouts up to the equal budget."""
    base = {r.seed: r for r in runs if r.strategy == "uniform"}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    by: dict[str, list[RunCurves]] = {}
    for r in runs:
        if r.strategy != "uniform" and r.seed in base:
            by.setdefault(r.strategy, []).append(r)
    for strategy, rs in by.items():
        pairs = [(r.accuracy(budget), base[r.seed].accuracy(budget)) for r in rs]
        pairs = [(a, b) for a, b in pairs if a[0].size >= 2 and b[0].size >= 2]
        if not pairs:
            continue
        top = min(min(a[0][-1], b[0][-1]) for a, b in pairs)
        grid = np.linspace(0, top, points)
        diffs = np.array([np.interp(grid, *a) - np.interp(grid, *b) for a, b in pairs])
        out[strategy] = (grid, diffs)
    return out


def _smoothed_ratio(run: RunCurves, window: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([r["rollouts_total"] for r in run.steps], dtype=np.float64)
    eff = np.array([r["effective_rollout_ratio"] * r["rollouts"] for r in run.steps])
    n = np.array([r["rollouts"] for r in run.steps], dtype=np.float64)
    k = np.ones(max(1, min(window, len(x))))
    return x, np.convolve(eff, k, "same") / np.convolve(n, k, "same")


def plot_experiment(
    out_dir: Path,
    runs: Sequence[RunCurves],
    summaries: Sequence[StrategySummary],
    budget: int,
    step_budget: int,
    title: str,
) -> list[Path]:
    """budget: the common rollout budget R; step_budget: B, the rollouts of one uniform step."""
    plt = _plt()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    steps_total = budget / step_budget
    window = max(1, int(steps_total // 40))
    capped = [RunCurves(r.strategy, r.seed, r.within(budget), r.evals) for r in runs]

    fig, ax = plt.subplots(figsize=(8, 4.5))
    _bands(ax, _grid(capped, budget, lambda r: _smoothed_ratio(r, window)), step_budget)
    ax.set(
        xlabel="rollouts consumed / B  (= steps of uniform)",
        ylabel="effective-rollout ratio",
        title=f"Rollouts in groups with a gradient (mean of {window} steps; band: min-max "
        f"over seeds)\n{title}",
    )
    ax.legend()
    ax.grid(alpha=0.3)
    paths.append(_save(fig, out_dir / "effective_ratio.png", plt))

    def interval_plot(data, ylabel: str, heading: str, name: str, mark) -> None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        _bands(ax, data, step_budget, ci=True)
        mark(ax)
        ax.set(xlabel="rollouts consumed / B  (= steps of uniform)", ylabel=ylabel)
        ax.set_title(f"{heading} (band: 95% interval of the mean)\n{title}")
        ax.legend()
        ax.grid(alpha=0.3)
        paths.append(_save(fig, out_dir / name, plt))

    interval_plot(
        _grid(runs, budget, lambda r: r.accuracy()),
        "held-out accuracy",
        "Held-out accuracy against compute",
        "heldout_vs_rollouts.png",
        lambda ax: ax.axvline(steps_total, color="k", lw=0.8, ls=":", label="equal budget R"),
    )
    diffs = _paired_difference(runs, budget)
    if diffs:
        interval_plot(
            {s: (x, 100 * d) for s, (x, d) in diffs.items()},
            "held-out accuracy − uniform's (points)",
            "Paired by seed at equal rollouts",
            "heldout_difference.png",
            lambda ax: ax.axhline(0, color=COLORS["uniform"], lw=1.0, label="uniform"),
        )

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[2, 1])
    for s in summaries:
        total = sum(s.n_counts.values()) or 1
        ns = np.array(sorted(s.n_counts))
        share = np.array([s.n_counts[n] / total for n in ns])
        ax1.plot(
            ns,
            share,
            drawstyle="steps-mid",
            marker="o",
            ms=3,
            color=COLORS.get(s.strategy),
            label=s.strategy,
        )
    ax1.set(
        xscale="log",
        yscale="log",
        xlabel="n (rollouts given to a prompt)",
        ylabel="share of prompt-visits",
        title="Distribution of n per prompt",
    )
    top = max((max(s.n_counts, default=1) for s in summaries), default=1)
    ticks = [t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if t <= 2 * top]
    ax1.set_xticks(ticks, [str(t) for t in ticks])
    ax1.minorticks_off()
    ax1.legend()
    ax1.grid(alpha=0.3)
    names = [s.strategy for s in summaries]
    means = [s.max_n.mean for s in summaries]
    tops = [max(s.max_n.values, default=0) for s in summaries]
    ax2.bar(names, means, color=[COLORS.get(n, "#999") for n in names], alpha=0.8)
    ax2.scatter(names, tops, color="k", marker="_", s=300, label="largest over seeds")
    for i, t in enumerate(tops):
        ax2.text(i, t, f" {t:.0f}", ha="center", va="bottom")
    ax2.set(
        ylabel="largest n in the run",
        title="Largest n given (bar: mean over seeds)",
        ylim=(0, 1.2 * max(tops, default=1)),
    )
    ax2.tick_params(axis="x", rotation=20)
    ax2.legend(loc="upper right")
    paths.append(_save(fig, out_dir / "n_distribution.png", plt))
    return paths


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
