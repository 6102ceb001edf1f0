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


def test_help_reads_as_written(capsys):
    with pytest.raises(SystemExit):
        main(["pool", "--help"])
    text = capsys.readouterr().out
    assert "95% t-interval" in text and "%%" not in text and "--against" in text


def test_a_run_is_not_counted_twice_and_errors_are_plain(experiments, tmp_path, capsys):
    d = experiments[0]
    assert main(["pool", str(d), str(d / "results.json")]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["pool", str(d), "--strategy", "dapo"]) == 2
    assert "no strategy 'dapo' (it has uniform, knapsack-eb)" in capsys.readouterr().err
    assert main(["pool", str(tmp_path)]) == 2
    assert "no results.json" in capsys.readouterr().err


def test_two_arms_head_to_head_against_the_same_uniform_runs(experiments, tmp_path, capsys):
    a = experiments[0]
    b = tmp_path / "floor"
    (b / "runs").mkdir(parents=True)
    for seed in (0, 1):  # the same uniform runs, linked in as scripts/results.sh does
        (b / "runs" / f"uniform-seed{seed}").symlink_to(a / "runs" / f"uniform-seed{seed}")
    argv = ["experiment", "--steps", "20", "--seeds", "0,1", "--prompts", "128"]
    argv += ["--heldout", "32", "--prompts-per-step", "16", "--eval-every", "5", "--min-n", "4"]
    argv += ["--strategies", "uniform,knapsack-eb", "--baseline-factor", "2", "--out", str(b)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["pool", str(b), "--against", str(a)]) == 0
    text = capsys.readouterr().out

    def eb(d):
        res = json.loads((d / "results.json").read_text())
        return next(s for s in res["strategies"] if s["strategy"] == "knapsack-eb")

    v = 100 * (np.array(eb(b)["last_vs_uniform"]["values"]) - eb(a)["last_vs_uniform"]["values"])
    assert v.any()  # a floor of 4 changes the allocation, so the runs differ
    half = t.ppf(0.975, 1) * v.std(ddof=1) / np.sqrt(2)
    row = next(ln for ln in text.splitlines() if ln.startswith("| held-out, last 3"))
    assert f"{v.mean():+.1f} [{v.mean() - half:+.1f}, {v.mean() + half:+.1f}]" in row
    assert "minus the --against arm, 2 paired seeds" in text
    # refused: other seeds, other uniform runs, unpaired folders, a folder on both sides
    assert main(["pool", str(b), "--against", str(experiments[1])]) == 2
    assert "other seeds" in capsys.readouterr().err
    assert main(["pool", str(b), str(experiments[1]), "--against", str(a)]) == 2
    assert "one folder per folder: 2 against 1" in capsys.readouterr().err
    assert main(["pool", str(a), "--against", str(a)]) == 2
    assert "given twice" in capsys.readouterr().err
    res = json.loads((b / "results.json").read_text())
    uni = next(s for s in res["strategies"] if s["strategy"] == "uniform")
    uni["auc"]["values"][0] += 0.01
    other = tmp_path / "other-uniform"
    other.mkdir()
    (other / "results.json").write_text(json.dumps(res))
    assert main(["pool", str(other), "--against", str(a)]) == 2
    assert "not the same uniform runs (uniform's auc differs)" in capsys.readouterr().err
