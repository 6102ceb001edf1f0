"""`krl pool`: one strategy's paired differences to uniform pooled over several experiments
(other seeds, other draws of the task), with a 95% t-interval over all the seeds: how
docs/RESULTS.md's pooled figures are made. Reads each experiment's results.json; a run is
never counted twice.

With --against, two arms head to head: each folder is paired with the --against folder in the
same place, measured against the same uniform runs (same seeds, same uniform figures), so
(A - uniform) - (B - uniform) is A - B on each seed."""

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
        "all their seeds: mean, 95% t-interval, and on how many seeds it was higher. With "
        "--against, its differences to another arm measured against the same uniform runs.",
    )
    p.add_argument("folders", type=Path, nargs="+", help="experiment folders (or results.json)")
    p.add_argument("--strategy", default="knapsack-eb", help="default: knapsack-eb")
    p.add_argument(
        "--against",
        type=Path,
        nargs="+",
        default=None,
        metavar="FOLDER",
        help="experiment folders of the other arm, one per folder in the same order, each "
        "against the same uniform runs: print the first arm's differences to this one",
    )
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


UNIFORM_FIGURES = ("last_accuracy", "auc", "final_accuracy")
"""uniform's per-seed figures that must agree for two folders to share their uniform runs."""


def _same_baseline(a: Path, b: Path) -> None:
    ua, sa = load(a, "uniform")
    ub, sb = load(b, "uniform")
    if sa != sb:
        raise ValueError(f"{a} and {b}: other seeds ({sa} against {sb})")
    for key in UNIFORM_FIGURES:
        if ua[key]["values"] != ub[key]["values"]:
            raise ValueError(f"{a} and {b}: not the same uniform runs (uniform's {key} differs)")


def pool(
    folders: list[Path], strategy: str, against: list[Path] | None = None
) -> tuple[dict[str, Spread], list[str]]:
    """Each measure's values over every seed of every folder (minus the --against folder's on
    the same seed, when given), and the folders' labels."""
    if against is not None and len(against) != len(folders):
        raise ValueError(
            f"--against needs one folder per folder: {len(folders)} against {len(against)}"
        )
    seen: set[Path] = set()
    out = {key: Spread() for key, _, _ in MEASURES}
    labels = []
    for i, folder in enumerate(folders):
        pair = [folder] if against is None else [folder, against[i]]
        for f in pair:
            real = (f.parent if f.name == "results.json" else f).resolve()
            if real in seen:
                raise ValueError(f"{f}: given twice (a run is counted once)")
            seen.add(real)
        entry, seeds = load(folder, strategy)
        other = None
        if against is not None:
            _same_baseline(folder, against[i])
            other, _ = load(against[i], strategy)
        for key, _, _ in MEASURES:
            values = entry[key]["values"]
            if other is not None:
                values = [a - b for a, b in zip(values, other[key]["values"], strict=True)]
            out[key].values.extend(values)
        vs = "" if against is None else f" against {against[i]}"
        labels.append(f"{folder}{vs} (seeds {seeds[0]}–{seeds[-1]}, {len(seeds)})")
    return out, labels


def fmt(sp: Spread, unit: str, difference: bool = False) -> str:
    if not sp.finite:
        return "-"
    if unit == "ratio":
        if difference:
            return f"{sp.mean:+.2f} [{sp.mean - sp.ci95:+.2f}, {sp.mean + sp.ci95:+.2f}]×"
        return f"{sp.mean:.2f} ± {sp.sd:.2f}×"
    scale = 100.0
    m, h = scale * sp.mean, scale * sp.ci95
    higher = sum(v > 0 for v in sp.finite)
    tail = f" (higher on {higher} of {len(sp.finite)})" if unit == "points" else ""
    pct = "%" if unit == "percent" else ""
    return f"{m:+.1f}{pct} [{m - h:+.1f}, {m + h:+.1f}]{tail}"


def run(args: argparse.Namespace) -> int:
    try:
        spreads, labels = pool(args.folders, args.strategy, args.against)
    except (ValueError, KeyError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(spreads["last_vs_uniform"].values)
    head = "against uniform" if args.against is None else "minus the --against arm"
    print(f"{args.strategy} {head}, {n} paired seeds pooled from:")
    for label in labels:
        print(f"  {label}")
    print()
    print("| measure | mean [95% CI] |")
    print("| --- | --- |")
    for key, name, unit in MEASURES:
        print(f"| {name} | {fmt(spreads[key], unit, args.against is not None)} |")
    return 0
