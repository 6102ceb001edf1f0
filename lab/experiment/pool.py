"""`krl pool`: one strategy's paired differences to uniform pooled over several experiments
(other seeds, other draws of the task), with a 95% t-interval over all the seeds: how
docs/RESULTS.md's pooled figures are made. Reads each experiment's results.json; a run is
never counted twice."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from krl.experiment.analysis import Spread

# (results.json key, what it is, in accuracy points or a ratio)
MEASURES = (
    ("last_vs_uniform", "held-out, last 3 evals − uniform's", "points"),
    ("auc_vs_uniform", "area under the curve − uniform's", "points"),
    ("accuracy_vs_uniform", "final evaluation − uniform's", "points"),
    ("compute_multiplier", "uniform's rollouts to match", "ratio"),
    ("after_epoch1_vs_uniform", "effective rollouts after epoch 1, vs uniform", "percent"),
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pool",
        help="pool one strategy's paired differences to uniform over several experiments",
        description="Read the results.json of each experiment folder given (krl experiment "
        "--out) and print, for one strategy, its paired differences to uniform pooled over "
        "all their seeds: mean, 95%% t-interval, and on how many seeds it was higher.",
    )
    p.add_argument("folders", type=Path, nargs="+", help="experiment folders (or results.json)")
    p.add_argument("--strategy", default="knapsack-eb", help="default: knapsack-eb")
    p.set_defaults(func=run)


def load(folder: Path, strategy: str) -> tuple[dict, list[int]]:
    """The strategy's entry of an experiment's results.json and the seeds its values are of."""
    path = folder if folder.name == "results.json" else folder / "results.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no results.json (run krl experiment with --out there)")
    res = json.loads(path.read_text())
    found = [s for s in res["strategies"] if s["strategy"] == strategy]
    if not found:
        have = ", ".join(s["strategy"] for s in res["strategies"])
        raise ValueError(f"{path}: no strategy {strategy!r} (it has {have})")
    entry = found[0]
    seeds = list(res["plan"]["seeds"])
    if len(entry["last_vs_uniform"]["values"]) != len(seeds):
        raise ValueError(f"{path}: {strategy} lacks a paired uniform run on some seed")
    return entry, seeds


def pool(folders: list[Path], strategy: str) -> tuple[dict[str, Spread], list[str]]:
    """Each measure's values over every seed of every folder, and the folders' labels."""
    seen: set[Path] = set()
    out = {key: Spread() for key, _, _ in MEASURES}
    labels = []
    for folder in folders:
        real = (folder.parent if folder.name == "results.json" else folder).resolve()
        if real in seen:
            raise ValueError(f"{folder}: given twice (a run is counted once)")
        seen.add(real)
        entry, seeds = load(folder, strategy)
        for key, _, _ in MEASURES:
            out[key].values.extend(entry[key]["values"])
        labels.append(f"{folder} (seeds {seeds[0]}–{seeds[-1]}, {len(seeds)})")
    return out, labels


def fmt(sp: Spread, unit: str) -> str:
    if not sp.finite:
        return "-"
    if unit == "ratio":
        return f"{sp.mean:.2f} ± {sp.sd:.2f}×"
    scale = 100.0
    m, h = scale * sp.mean, scale * sp.ci95
    higher = sum(v > 0 for v in sp.finite)
    tail = f" (higher on {higher} of {len(sp.finite)})" if unit == "points" else ""
    pct = "%" if unit == "percent" else ""
    return f"{m:+.1f}{pct} [{m - h:+.1f}, {m + h:+.1f}]{tail}"


def run(args: argparse.Namespace) -> int:
    try:
        spreads, labels = pool(args.folders, args.strategy)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(spreads["last_vs_uniform"].values)
    print(f"{args.strategy} against uniform, {n} paired seeds pooled from:")
    for label in labels:
        print(f"  {label}")
    print()
    print("| measure | mean [95% CI] |")
    print("| --- | --- |")
    for key, name, unit in MEASURES:
        print(f"| {name} | {fmt(spreads[key], unit)} |")
    return 0
