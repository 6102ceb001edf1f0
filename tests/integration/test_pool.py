"""`krl pool`: a strategy's paired differences to uniform over several experiments' seeds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import t

from krl.cli import main


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    out = []
    for seeds in ("0,1", "5,6,7"):
        d = tmp_path_factory.mktemp("exp")
        argv = ["experiment", "--steps", "20", "--seeds", seeds, "--prompts", "128"]
        argv += ["--heldout", "32", "--prompts-per-step", "16", "--eval-every", "5"]
        argv += ["--strategies", "uniform,knapsack-eb", "--baseline-factor", "2", "--out", str(d)]
        assert main(argv) == 0
        out.append(d)
    return out


def test_pooled_interval_is_over_every_seed(experiments, capsys):
    capsys.readouterr()
    assert main(["pool", *map(str, experiments)]) == 0
    text = capsys.readouterr().out
    values = []
    for d in experiments:
        res = json.loads((d / "results.json").read_text())
        eb = next(s for s in res["strategies"] if s["strategy"] == "knapsack-eb")
        values += eb["last_vs_uniform"]["values"]
    assert len(values) == 5
    v = 100 * np.array(values)
    half = t.ppf(0.975, 4) * v.std(ddof=1) / np.sqrt(5)
    row = next(ln for ln in text.splitlines() if ln.startswith("| held-out, last 3"))
    want = f"{v.mean():+.1f} [{v.mean() - half:+.1f}, {v.mean() + half:+.1f}]"
    assert want in row and "of 5)" in row
    assert "5 paired seeds pooled" in text and "(seeds 5–7, 3)" in text


def test_a_run_is_not_counted_twice_and_errors_are_plain(experiments, tmp_path, capsys):
    d = experiments[0]
    assert main(["pool", str(d), str(d / "results.json")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["pool", str(d), "--strategy", "dapo"]) == 2
    assert "no strategy 'dapo' (it has uniform, knapsack-eb)" in capsys.readouterr().err
    assert main(["pool", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err
