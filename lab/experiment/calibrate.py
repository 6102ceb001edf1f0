"""`krl calibrate`: how well each value model predicts the *next* visit of a prompt.

A trace is the sequence of visits (step, prompt, n, successes) of one run. It comes from a run
folder's Redis (the allocator's records keep each prompt's last RECENT_KEPT visits; a run of a
few epochs is complete) or from the simulator (a population learning under uniform n). The
replay walks the steps in order: for every visit of a prompt seen before, each model predicts
P(the group of n has both outcomes) from the history before that step only, then the step's
visits are added. Scores: log-loss and Brier of that prediction, and a calibration table
(predicted against observed share of informative groups, by decile of the prediction).

Models (the allocator's own pure functions, so the replay judges the code that allocates):
- `paper`: p = last visit's successes/trials, P = 1 - p^n - (1-p)^n (clipped to [1e-3, 1-1e-3]:
  the paper's 0/8 prompt predicts 'never informative', which log-loss punishes, rightly);
- `beta-hlH`: the single Beta prior (method of moments) and evidence decayed with a half-life of
  H steps (H = 0: never), the retired mode bayes (kept here as the baseline it lost to);
- `eb`, `eb-nodrift`, `eb-vhlV`: the grid prior and visits shifted by the measured drift (the
  default), without the drift shift, with evidence halving every V visits.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import betaln

from krl.allocator.solve import grid
from krl.allocator.solve.posterior import eb_posterior, visit_weights
from krl.allocator.solve.prior import RateMoments, fit_prior
from krl.allocator.store import record_update
from krl.allocator.store.record import RECENT_KEPT, RECORD_PREFIX, VISIT_FIELDS, recent_of

EPS = 1e-3
MAX_PLOTTED = 8  # traces with a calibration panel


@dataclass
class Trace:
    """Visits in step order: arrays of equal length."""

    name: str
    step: np.ndarray
    prompt: np.ndarray  # dense prompt index 0..P-1
    n: np.ndarray
    k: np.ndarray

    @property
    def prompts(self) -> int:
        return int(self.prompt.max()) + 1 if self.prompt.size else 0

    @classmethod
    def from_visits(cls, name: str, visits: list[tuple[int, str, int, int]]) -> Trace:
        visits = sorted(v for v in visits if v[2] > 0)
        ids = {pid: i for i, pid in enumerate(sorted({v[1] for v in visits}))}
        arr = np.array([(s, ids[p], n, k) for s, p, n, k in visits], dtype=np.int64)
        arr = arr.reshape(-1, 4)
        return cls(name, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3])


def trace_from_redis(run_dir: Path) -> list[Trace]:
    """Every namespace of a run folder's Redis (its AOF is copied, never written)."""
    import redis

    from krl.common.redis_server import EmbeddedRedis

    src = Path(run_dir) / "redis"
    if not (src / "appendonly.aof").exists() and not (src / "appendonlydir").exists():
        raise FileNotFoundError(f"{run_dir}: no redis/appendonly.aof (not a krl up run folder?)")
    tmp = Path(tempfile.mkdtemp(prefix="krl-cal-"))
    try:
        for f in src.iterdir():
            if f.name.startswith("appendonly"):
                (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
        with EmbeddedRedis(tmp) as server:
            r = redis.Redis.from_url(server.url)
            out = []
            for ns in sorted(x.decode() for x in r.smembers("krl:namespaces")):
                visits = []
                prefix = f"krl:{{{ns}}}:{RECORD_PREFIX}:"
                for key in r.scan_iter(match=prefix + "*", count=1000):
                    pid = key.decode()[len(prefix) :]
                    visits += [(s, pid, n, k) for s, n, k in recent_of(r.get(key))]
                name = Path(run_dir).name
                out.append(Trace.from_visits(name if ns == name else f"{name}:{ns}", visits))
            r.close()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def trace_from_sim(
    spec: str,
    prompts: int,
    steps: int,
    seed: int,
    m: int = 64,
    n: int = 8,
    lr_shared: float = 0.02,
    lr_own: float = 0.05,
) -> Trace:
    """A simulated run under uniform n (the simulator's population and learning model)."""
    from krl.rl.data import EpochSampler
    from krl.sim.population import Difficulty, LearningModel, Population

    pop = Population.draw(
        Difficulty.parse(spec), prompts, 16, seed, LearningModel(lr_shared, lr_own)
    )
    sampler = EpochSampler([str(i) for i in range(prompts)], m, seed)
    rng = np.random.default_rng([seed, 13])
    visits = []
    for g in range(steps):
        idx = np.array([int(x) for x in sampler.batch(g)])
        nn = np.full(m, n)
        k = rng.binomial(nn, pop.p(idx))
        visits += [(g + 1, str(i), n, int(kk)) for i, kk in zip(idx, k, strict=True)]
        pop.update(idx, nn, k, (k > 0) & (k < nn), m * n)
    return Trace.from_visits(f"sim {spec} P={prompts} seed {seed}", visits)


# ------------------------------------------------------------------------------------ replay
@dataclass
class State:
    """What the allocator would know before a step: each prompt's last RECENT_KEPT visits
    (step, n, k, milli-logit), the last-visit counts, the namespace's rate, Beta evidence."""

    prompts: int
    visits: np.ndarray = field(init=False)
    count: np.ndarray = field(init=False)
    rate_s: float = 0.0
    rate_w: float = 0.0

    def __post_init__(self) -> None:
        self.visits = np.full((self.prompts, RECENT_KEPT, VISIT_FIELDS), -1, dtype=np.int64)
        self.count = np.zeros(self.prompts, dtype=np.int64)

    @property
    def rate_logit(self) -> float | None:
        if self.rate_w <= 0:
            return None
        r = min(max(self.rate_s / self.rate_w, 1e-3), 1 - 1e-3)
        return math.log(r / (1 - r))

    def add(self, step: int, idx: np.ndarray, n: np.ndarray, k: np.ndarray) -> None:
        factor, add_s, add_w = record_update.rate_sums(k, n)  # as a report updates it
        self.rate_s = self.rate_s * factor + add_s
        self.rate_w = self.rate_w * factor + add_w
        milli = record_update.milli_logit(self.rate_s, self.rate_w) if self.rate_w > 0 else 0
        for i, nn, kk in zip(idx.tolist(), n.tolist(), k.tolist(), strict=True):
            c = self.count[i]
            row = np.array([step, nn, kk, milli])
            if c < RECENT_KEPT:
                self.visits[i, c] = row
            else:
                self.visits[i, :-1] = self.visits[i, 1:]
                self.visits[i, -1] = row
            self.count[i] = min(c + 1, RECENT_KEPT)

    def last(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.count[idx] - 1
        v = self.visits[idx, np.maximum(c, 0)]
        return v[:, 2], v[:, 1]

    def seen(self) -> np.ndarray:
        return np.flatnonzero(self.count > 0)


Model = Callable[[State, int, np.ndarray, np.ndarray], np.ndarray]


def _p_informative_grid(w: np.ndarray, n: np.ndarray) -> np.ndarray:
    n = n.astype(np.float64)[:, None]
    inf = 1.0 - np.exp(n * grid.LOG_P[None, :]) - np.exp(n * grid.LOG_Q[None, :])
    return (w * inf).sum(axis=1)


def paper_model(st: State, step: int, idx: np.ndarray, n: np.ndarray) -> np.ndarray:
    k, t = st.last(idx)
    p = k / t
    return 1.0 - p**n - (1.0 - p) ** n


def eb_model(visit_half_life: float = 0.0, drift: bool = True) -> Model:
    def predict(st: State, step: int, idx: np.ndarray, n: np.ndarray) -> np.ndarray:
        seen = st.seen()
        k, t = st.last(seen)
        pairs, counts = np.unique(np.stack([k, t], axis=1), axis=0, return_counts=True)
        prior = grid.fit_prior(pairs[:, 0], pairs[:, 1], counts)
        v = st.visits[idx].copy()
        v[v[:, :, 1] < 0] = -1
        now = st.rate_logit if drift else None
        w = eb_posterior(prior, v, now, step, visit_half_life)
        return _p_informative_grid(w, n)

    return predict


def beta_moment(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """E[p^x (1-p)^y] for p ~ Beta(a, b), in log space."""
    return np.exp(betaln(a + x, b + y) - betaln(a, b))


def beta_model(half_life_steps: float) -> Model:
    def evidence(st: State, rows: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        v = st.visits[rows]
        w = visit_weights(v, step, visit_half_life=0.0, half_life_steps=half_life_steps)
        return (w * v[:, :, 2]).sum(1), (w * (v[:, :, 1] - v[:, :, 2])).sum(1)

    def predict(st: State, step: int, idx: np.ndarray, n: np.ndarray) -> np.ndarray:
        seen = st.seen()
        s_all, f_all = evidence(st, seen, step)
        a0, b0 = fit_prior(RateMoments.from_counts(s_all, s_all + f_all))
        s, f = evidence(st, idx, step)
        a, b = a0 + s, b0 + f
        nf = n.astype(np.float64)
        return 1.0 - beta_moment(a, b, nf, 0.0) - beta_moment(a, b, 0.0, nf)

    return predict


MODELS: dict[str, Model] = {
    "paper": paper_model,
    "beta-hl20": beta_model(20.0),
    "beta-hl100": beta_model(100.0),
    "beta-nodecay": beta_model(0.0),
    "eb": eb_model(),
    "eb-nodrift": eb_model(drift=False),
    "eb-vhl1": eb_model(visit_half_life=1.0),
    "eb-vhl4": eb_model(visit_half_life=4.0),
}


@dataclass
class Scores:
    model: str
    visits: int
    log_loss: float
    brier: float
    deciles: list[dict[str, float]]

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "visits": self.visits,
            "log_loss": self.log_loss,
            "brier": self.brier,
            "deciles": self.deciles,
        }


def log_loss(pred: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(pred, EPS, 1 - EPS)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def brier(pred: np.ndarray, y: np.ndarray) -> float:
    return float(((np.clip(pred, 0.0, 1.0) - y) ** 2).mean())


def deciles(pred: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Predicted against observed share, by decile of the prediction (equal-count bins)."""
    order = np.argsort(pred, kind="stable")
    out = []
    for part in np.array_split(order, bins):
        if part.size:
            out.append(
                {
                    "predicted": float(pred[part].mean()),
                    "observed": float(y[part].mean()),
                    "visits": int(part.size),
                }
            )
    return out


def replay(trace: Trace, models: dict[str, Model]) -> list[Scores]:
    st = State(trace.prompts)
    preds: dict[str, list[np.ndarray]] = {m: [] for m in models}
    ys: list[np.ndarray] = []
    bounds = np.flatnonzero(np.diff(trace.step)) + 1
    for part in np.split(np.arange(trace.step.size), bounds):
        if part.size == 0:
            continue
        step = int(trace.step[part[0]])
        idx, n, k = trace.prompt[part], trace.n[part], trace.k[part]
        again = st.count[idx] > 0
        if again.any():
            for name, model in models.items():
                preds[name].append(np.clip(model(st, step, idx[again], n[again]), 0.0, 1.0))
            ys.append(((k[again] > 0) & (k[again] < n[again])).astype(np.float64))
        st.add(step, idx, n, k)
    y = np.concatenate(ys) if ys else np.zeros(0)
    out = []
    for name in models:
        p = np.concatenate(preds[name]) if preds[name] else np.zeros(0)
        if y.size == 0:
            out.append(Scores(name, 0, math.nan, math.nan, []))
            continue
        out.append(Scores(name, int(y.size), log_loss(p, y), brier(p, y), deciles(p, y)))
    return out


def write_report(out: Path, results: dict[str, list[Scores]]) -> Path:
    """results.json, results.md (a table per trace) and calibration.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({t: [s.as_dict() for s in sc] for t, sc in results.items()}, indent=1)
    )
    lines = ["# Calibration: predicting whether the next visit's group is informative", ""]
    lines += [*_summary(results), "", "![calibration](calibration.png)", ""]
    for t, sc in results.items():
        best = min(s.log_loss for s in sc)
        lines += [
            f"## {t}",
            "",
            f"{sc[0].visits:,} revisits scored.",
            "",
            "| model | log-loss | Brier |",
            "| --- | --- | --- |",
        ]
        for s in sorted(sc, key=lambda s: s.log_loss):
            mark = " **(best)**" if s.log_loss == best else ""
            lines.append(f"| {s.model}{mark} | {s.log_loss:.4f} | {s.brier:.4f} |")
        lines.append("")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(out / "calibration.png", results)
    return out / "results.md"


def _summary(results: dict[str, list[Scores]]) -> list[str]:
    """Over all traces: each model's mean log-loss and Brier, and on how many it was best."""
    models = [s.model for s in next(iter(results.values()))]
    best = [min(sc, key=lambda s: s.log_loss).model for sc in results.values()]
    rows = []
    for m in models:
        ll = [s.log_loss for sc in results.values() for s in sc if s.model == m]
        br = [s.brier for sc in results.values() for s in sc if s.model == m]
        rows.append((float(np.mean(ll)), float(np.mean(br)), best.count(m), m))
    lines = [
        f"Over {len(results)} traces:",
        "",
        "| model | mean log-loss | mean Brier | best on |",
        "| --- | --- | --- | --- |",
    ]
    for ll, br, wins, m in sorted(rows):
        lines.append(f"| {m} | {ll:.4f} | {br:.4f} | {wins} of {len(results)} |")
    return lines


def _plot(path: Path, results: dict[str, list[Scores]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = dict(list(results.items())[:MAX_PLOTTED])
    k = len(shown)
    cols = min(k, 4)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    for ax, (t, sc) in zip(axes.ravel(), shown.items(), strict=False):
        ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--")
        for s in sc:
            if s.model not in ("paper", "beta-hl20", "beta-nodecay", "eb"):
                continue
            xs = [d["predicted"] for d in s.deciles]
            ys = [d["observed"] for d in s.deciles]
            ax.plot(xs, ys, marker="o", ms=3, label=f"{s.model} ({s.log_loss:.3f})")
        ax.set_title(t, fontsize=8)
        ax.set_xlabel("predicted P(informative)")
        ax.set_ylabel("observed share informative")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
