"""`krl solve` as a user runs it: JSON in, JSON out, precise errors."""

import json
import subprocess
import sys

import pytest


def krl_solve(doc) -> subprocess.CompletedProcess:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return subprocess.run(
        [sys.executable, "-m", "krl.cli", "solve", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )


PROMPTS = [
    {"id": "a", "successes": 1, "trials": 8},
    {"id": "b", "successes": 7, "trials": 8},
    {"id": "c", "successes": 0, "trials": 8},
    {"id": "d", "successes": 4, "trials": 8},
]


@pytest.mark.parametrize("mode", ["eb", "paper", "uniform"])
def test_solve_prints_the_allocation(mode):
    r = krl_solve(
        {"budget": 32, "min_n": 2, "max_n": 16, "mode": mode, "fallback": True, "prompts": PROMPTS}
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (
        {"allocation", "objective", "solve_ms"}
        <= set(out)
        <= {
            "allocation",
            "objective",
            "solve_ms",
            "gap_bound",
        }
    )
    assert sum(out["allocation"].values()) == 32 and list(out["allocation"]) == ["a", "b", "c", "d"]
    assert out["objective"] >= 0 and out["solve_ms"] >= 0 and out.get("gap_bound", 0) >= 0
    if mode == "uniform":
        assert list(out["allocation"].values()) == [8, 8, 8, 8]
    else:  # the solvers give the unsolved and the easy prompt other n than the 4 of 8
        assert len(set(out["allocation"].values())) > 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {"budget": 7, "min_n": 2, "max_n": 16, "prompts": PROMPTS},
            "budget: 7 is outside [8, 64]",
        ),
        ({"budget": 8, "min_n": 4, "max_n": 2, "prompts": PROMPTS}, "min_n: min_n (4) is greater"),
        ({"budget": 8.5, "max_n": 4, "prompts": PROMPTS}, "budget: must be an integer"),
        ({"budget": 8, "max_n": 4, "prompts": []}, "prompt_ids: the batch is empty"),
        (
            {"budget": 8, "max_n": 4, "prompts": [{"id": "a", "successes": 3, "trials": 2}]},
            "prompts[0].successes",
        ),
        (
            {"budget": 8, "max_n": 4, "prompts": [{"id": "a", "successes": -1, "trials": 2}]},
            "prompts[0].successes",
        ),
        (
            {"budget": 8, "max_n": 4, "prompts": [{"id": "a", "trials": 2.5}]},
            "prompts[0].trials: must be an integer",
        ),
        (
            {"budget": 8, "max_n": 4, "prompts": [{"id": "a"}, {"id": "a"}]},
            "prompts[1].id: duplicate",
        ),
        (
            '{"budget": 8, "max_n": 4, "prompts": [{"id": "a", "mean_tokens": 300}]}',
            "prompts[0].mean_tokens: unknown key",
        ),
        (
            {"budget": 8, "max_n": 4, "mode": "magic", "prompts": PROMPTS},
            "mode: must be one of paper, eb, uniform",
        ),
        ({"budget": 8, "max_n": 4, "prompt": PROMPTS}, "prompt: unknown key"),
        ("{not json", "$: not valid JSON"),
    ],
)
def test_bad_input_gets_a_precise_error(doc, message):
    r = krl_solve(doc)
    assert r.returncode == 2 and r.stdout == ""
    assert message in r.stderr, r.stderr
