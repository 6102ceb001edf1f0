"""From run folders (metrics.jsonl: step rows and eval rows, each with rollouts_total) to the
figures an experiment reports. Pure functions; the runner and the plots share them.

Every comparison is at an equal rollout budget R (the allocated strategies' steps x M x n):
ratios use the rows with rollouts_total <= R even when a baseline ran longer. The compute
multiplier of strategy X is R_uniform(a) / R_X(a), where a is X's final held-out accuracy and
R_S(a) the rollouts at which S's accuracy curve (running maximum, linearly interpolated between
evaluations) first reaches a; uniform may run past R (baseline_factor) so it can get there.

Beside the final evaluation, two less noisy accuracies: the mean of the last LAST_EVALS
evaluations within R, and the area under the accuracy-against-rollouts curve over [0, R]
divided by R (the mean accuracy over the run's compute: a strategy that learns sooner scores
higher at the same end point)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LAST_EVALS = 3
"""Evaluations averaged for the 'last' accuracy."""


@dataclass
class RunCurves:
    strategy: str
    seed: int
    steps: list[dict]
    evals: list[dict]

    @classmethod
    def from_rows(cls, strategy: str, seed: int, rows: Sequence[Mapping]) -> RunCurves:
        return cls(
            strategy,
            seed,
            [dict(r) for r in rows if r.get("kind") == "step"],
            [dict(r) for r in rows if r.get("kind") == "eval"],
        )

    def within(self, budget: int) -> list[dict]:
        return [r for r in self.steps if r["rollouts_total"] <= budget]

    def accuracy(self, budget: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rollouts, held-out accuracy) of the evaluations up to `budget`."""
        ev = [e for e in self.evals if budget is None or e["rollouts_total"] <= budget]
        return (
            np.array([e["rollouts_total"] for e in ev], dtype=np.float64),
            np.array([e["accuracy"]["all"] for e in ev], dtype=np.float64),
        )


def last_mean(acc: np.ndarray, k: int = LAST_EVALS) -> float:
    """Mean of the last k accuracies (all of them when fewer)."""
    return float(np.mean(acc[-k:])) if acc.size else math.nan


def area_under(x: np.ndarray, acc: np.ndarray, budget: float) -> float:
    """Mean accuracy over rollouts [0, budget]: the trapezoid area under the curve (held flat
    after its last evaluation), divided by budget."""
    if x.size == 0 or budget <= 0:
        return math.nan
    xs = np.append(x, budget) if x[-1] < budget else x
    ys = np.append(acc, acc[-1]) if x[-1] < budget else acc
    keep = xs <= budget
    xs, ys = xs[keep], ys[keep]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / budget)


def effective_ratio(rows: Sequence[Mapping], key: str = "effective_rollout_ratio") -> float:
    """Rollout-weighted mean over steps: rollouts that carried a gradient / rollouts generated."""
    total = sum(r["rollouts"] for r in rows)
    return sum(r[key] * r["rollouts"] for r in rows) / total if total else math.nan


def rollouts_to_reach(x: np.ndarray, acc: np.ndarray, target: float) -> float:
    """First rollouts at which the running maximum of acc reaches target (interpolated between
    evaluations); inf when it never does."""
    if x.size == 0:
        return math.inf
    best = np.maximum.accumulate(acc)
    hit = np.flatnonzero(best >= target - 1e-12)
    if hit.size == 0:
        return math.inf
    i = int(hit[0])
    if i == 0:
        return float(x[0])
    lo, hi = best[i - 1], best[i]
    frac = (target - lo) / (hi - lo) if hi > lo else 1.0
    return float(x[i - 1] + frac * (x[i] - x[i - 1]))


@dataclass
class Spread:
    values: list[float] = field(default_factory=list)

    @property
    def finite(self) -> list[float]:
        return [v for v in self.values if math.isfinite(v)]

    @property
    def mean(self) -> float:
        f = self.finite
        return float(np.mean(f)) if f else math.nan

    @property
    def sd(self) -> float:
        f = self.finite
        return float(np.std(f, ddof=1)) if len(f) > 1 else 0.0

    @property
    def ci95(self) -> float:
        """Half-width of the 95% t-interval of the mean (0.0 with fewer than two values)."""
        f = self.finite
        if len(f) < 2:
            return 0.0
        from scipy.stats import t

        return float(t.ppf(0.975, len(f) - 1) * self.sd / math.sqrt(len(f)))

    def as_dict(self) -> dict:
        return {"mean": self.mean, "sd": self.sd, "ci95": self.ci95, "values": self.values}


@dataclass
class StrategySummary:
    strategy: str
    seeds: int
    effective_ratio: Spread
    expected_effective_ratio: Spread
    vs_uniform: Spread
    """Relative effective-ratio gain over uniform, paired by seed (0.2 = +20%)."""
    objective_vs_uniform: Spread
    """The paper's objective sum_i Value(n_i, p_i) at the true p (simulator only), per rollout,
    relative to uniform's, paired by seed; not defined for dapo (it drops groups)."""
    max_n: Spread
    final_accuracy: Spread
    peak_accuracy: Spread
    compute_multiplier: Spread
    """Rollouts uniform needs for this strategy's final accuracy / rollouts this one needed."""
    multiplier_lower_bounds: int
    """Seeds where uniform never reached the target: the multiplier is above its run's length."""
    n_counts: dict[int, int]
    after_epoch1_vs_uniform: Spread = field(default_factory=Spread)
    """The relative effective-ratio gain over the steps after the first epoch (when every
    prompt has a history), paired by seed."""
    accuracy_vs_uniform: Spread = field(default_factory=Spread)
    """Final held-out accuracy minus uniform's at the equal budget, paired by seed."""
    last_accuracy: Spread = field(default_factory=Spread)
    """Mean of the last LAST_EVALS evaluations within the budget."""
    last_vs_uniform: Spread = field(default_factory=Spread)
    auc: Spread = field(default_factory=Spread)
    """Mean accuracy over the budget's rollouts (area_under)."""
    auc_vs_uniform: Spread = field(default_factory=Spread)
    effective_prompt_ratio: Spread = field(default_factory=Spread)
    """Share of prompt-visits whose group carried a gradient."""
    after_epoch1_prompt_ratio: Spread = field(default_factory=Spread)
    tokens: Spread = field(default_factory=Spread)
    """Completion tokens generated within the budget (hard prompts answer longer)."""
    wall_s: Spread = field(default_factory=Spread)
    """Seconds from the first to the last step within the budget (evaluations included)."""

    def as_dict(self) -> dict:
        out = {k: (v.as_dict() if isinstance(v, Spread) else v) for k, v in self.__dict__.items()}
        out["n_counts"] = {str(k): v for k, v in sorted(self.n_counts.items())}
        return out


def summarize(
    runs: Sequence[RunCurves], budget: int, baseline: str = "uniform"
) -> list[StrategySummary]:
    by: dict[str, dict[int, RunCurves]] = {}
    for r in runs:
        by.setdefault(r.strategy, {})[r.seed] = r
    base = by.get(baseline, {})
    out = []
    for strategy, seeds in by.items():
        s = StrategySummary(
            strategy,
            len(seeds),
            Spread(),
            Spread(),
            Spread(),
            Spread(),
            Spread(),
            Spread(),
            Spread(),
            Spread(),
            0,
            Counter(),
        )
        for seed, run in sorted(seeds.items()):
            rows = run.within(budget)
            eff = effective_ratio(rows)
            s.effective_ratio.values.append(eff)
            if rows and "expected_effective_ratio" in rows[0]:
                s.expected_effective_ratio.values.append(
                    effective_ratio(rows, "expected_effective_ratio")
                )
            s.max_n.values.append(float(max((r["max_n"] for r in rows), default=0)))
            for r in rows:
                for n, c in r["n_counts"].items():
                    s.n_counts[int(n)] += c
            s.effective_prompt_ratio.values.append(_prompt_ratio(rows))
            s.after_epoch1_prompt_ratio.values.append(_prompt_ratio(_after_epoch1(rows)))
            s.tokens.values.append(float(sum(r.get("tokens", 0) for r in rows)))
            if rows and "time" in rows[0]:
                s.wall_s.values.append(float(rows[-1]["time"] - rows[0]["time"]))
            x, acc = run.accuracy(budget)
            if acc.size:
                s.final_accuracy.values.append(float(acc[-1]))
                s.peak_accuracy.values.append(float(acc.max()))
                s.last_accuracy.values.append(last_mean(acc))
                s.auc.values.append(area_under(x, acc, budget))
            b = base.get(seed)
            if b is None:
                continue
            s.vs_uniform.values.append(eff / effective_ratio(b.within(budget)) - 1.0)
            late, base_late = _after_epoch1(rows), _after_epoch1(b.within(budget))
            if late and base_late:
                s.after_epoch1_vs_uniform.values.append(
                    effective_ratio(late) / effective_ratio(base_late) - 1.0
                )
            _, bacc_eq = b.accuracy(budget)
            if acc.size and bacc_eq.size:
                s.accuracy_vs_uniform.values.append(float(acc[-1] - bacc_eq[-1]))
                s.last_vs_uniform.values.append(last_mean(acc) - last_mean(bacc_eq))
                bx_eq, _ = b.accuracy(budget)
                s.auc_vs_uniform.values.append(
                    area_under(x, acc, budget) - area_under(bx_eq, bacc_eq, budget)
                )
            if strategy != "dapo" and rows and "expected_value" in rows[0]:
                s.objective_vs_uniform.values.append(
                    _value_per_rollout(rows) / _value_per_rollout(b.within(budget)) - 1.0
                )
            if acc.size:
                mine = rollouts_to_reach(x, acc, float(acc[-1]))
                bx, bacc = b.accuracy()
                theirs = rollouts_to_reach(bx, bacc, float(acc[-1]))
                if math.isinf(theirs):
                    s.multiplier_lower_bounds += 1
                    theirs = float(bx[-1]) if bx.size else math.inf
                s.compute_multiplier.values.append(theirs / mine if mine > 0 else math.nan)
        out.append(s)
    return out


def _prompt_ratio(rows: Sequence[Mapping]) -> float:
    """Prompt-weighted mean of the effective-prompt ratio (steps weigh alike where rows do not
    count their prompts; nan without the column)."""
    have = [r for r in rows if "effective_prompt_ratio" in r]
    total = sum(r.get("prompts", 1) for r in have)
    ratio = sum(r["effective_prompt_ratio"] * r.get("prompts", 1) for r in have)
    return ratio / total if total else math.nan


def _after_epoch1(rows: Sequence[Mapping]) -> list[Mapping]:
    return [r for r in rows if r.get("epoch", 0.0) > 1.0]


def _value_per_rollout(rows: Sequence[Mapping]) -> float:
    return sum(r["expected_value"] for r in rows) / max(sum(r["rollouts"] for r in rows), 1)


def fmt_spread(sp: Spread, pct: bool = False, signed: bool = False, digits: int = 1) -> str:
    if not sp.finite:
        return "-"
    scale = 100.0 if pct else 1.0
    sign = "+" if signed else ""
    unit = "%" if pct else ""
    return f"{sp.mean * scale:{sign}.{digits}f}{unit} ± {sp.sd * scale:.{digits}f}"


def fmt_ci(sp: Spread, digits: int = 1) -> str:
    """Mean and 95% interval, in percent: '+18.7% [17.6, 19.8]'."""
    if not sp.finite:
        return "-"
    m, h = 100 * sp.mean, 100 * sp.ci95
    return f"{m:+.{digits}f}% [{m - h:+.{digits}f}, {m + h:+.{digits}f}]"


def _table(cols: Sequence[str], summaries: Sequence[StrategySummary], cells) -> str:
    """A markdown table: a row of cells(summary, is_uniform) per strategy."""
    rows = [cols, *(cells(s, s.strategy == "uniform") for s in summaries)]
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + " --- |" * len(cols))
    return "\n".join(lines)


def _multiplier(s: StrategySummary) -> str:
    """Uniform's rollouts to match, '1×' for uniform itself, with the lower-bound seeds."""
    if s.strategy == "uniform":
        return "1×"
    mult = fmt_spread(s.compute_multiplier, digits=2)
    mult = mult + "×" if mult != "-" else "-"
    if s.multiplier_lower_bounds:
        mult += f" (≥ on {s.multiplier_lower_bounds} seed(s): uniform never got there)"
    return mult


def markdown_table(summaries: Sequence[StrategySummary]) -> str:
    sim = any(s.objective_vs_uniform.finite for s in summaries)
    cols = ["strategy", "seeds", "effective-rollout ratio", "vs uniform"]
    if sim:
        cols.append("paper objective at true p, vs uniform")
    cols += [
        "after epoch 1, vs uniform (95% CI)",
        "largest n",
        "held-out acc. (final)",
        "acc. − uniform's (95% CI, points)",
        "peak",
        "uniform's rollouts to match",
    ]

    def cells(s: StrategySummary, base: bool) -> list[str]:
        out = [
            s.strategy,
            str(s.seeds),
            fmt_spread(s.effective_ratio, pct=True),
            "-" if base else fmt_spread(s.vs_uniform, pct=True, signed=True),
        ]
        if sim:
            out.append("-" if base else fmt_spread(s.objective_vs_uniform, pct=True, signed=True))
        out += [
            "-" if base else fmt_ci(s.after_epoch1_vs_uniform),
            f"{fmt_spread(s.max_n, digits=0)} (max {max(s.max_n.values, default=0):.0f})",
            fmt_spread(s.final_accuracy, pct=True),
            "-" if base else fmt_ci(s.accuracy_vs_uniform).replace("%", ""),
            fmt_spread(s.peak_accuracy, pct=True),
            _multiplier(s),
        ]
        return out

    return _table(cols, summaries, cells)


def _points(sp: Spread) -> str:
    """A paired difference of accuracies in points with its 95% interval: '+2.1 [+0.4, +3.8]'."""
    return fmt_ci(sp).replace("%", "")


def learning_table(summaries: Sequence[StrategySummary]) -> str:
    """What the policy learned at the equal budget: held-out accuracy three ways, each against
    uniform's with a paired 95% interval, uniform's rollouts to match, and what it cost."""
    cols = [
        "strategy",
        "seeds",
        f"held-out, last {LAST_EVALS} evals",
        "− uniform's (95% CI, points)",
        "AUC − uniform's (95% CI, points)",
        "final − uniform's (95% CI, points)",
        "uniform's rollouts to match",
        "effective-prompt ratio (after epoch 1)",
        "completion tokens",
        "wall time",
    ]

    def cells(s: StrategySummary, base: bool) -> list[str]:
        return [
            s.strategy,
            str(s.seeds),
            fmt_spread(s.last_accuracy, pct=True),
            "-" if base else _points(s.last_vs_uniform),
            "-" if base else _points(s.auc_vs_uniform),
            "-" if base else _points(s.accuracy_vs_uniform),
            _multiplier(s),
            f"{fmt_spread(s.effective_prompt_ratio, pct=True)} "
            f"({fmt_spread(s.after_epoch1_prompt_ratio, pct=True)})",
            f"{s.tokens.mean:,.0f}" if s.tokens.finite else "-",
            f"{s.wall_s.mean / 60:.1f} min" if s.wall_s.finite else "-",
        ]

    return _table(cols, summaries, cells)
