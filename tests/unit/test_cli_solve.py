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
    {"id": "a", "successes": 1, "trials": 8, "mean_tokens": 300},
    {"id": "b", "successes": 7, "trials": 8, "mean_tokens": 100},
    {"id": "c", "successes": 0, "trials": 8, "mean_tokens": 500},
    {"id": "d", "successes": 4, "trials": 8},
]


@pytest.mark.parametrize("mode", ["eb", "paper", "bayes"])
def test_solve_prints_the_allocation(mode):
    r = krl_solve(
        {"budget": 32, "min_n": 2, "max_n": 16, "mode": mode, "fallback": True, "prompts": PROMPTS}
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"allocation", "objective", "solve_ms"}
    assert sum(out["allocation"].values()) == 32 and list(out["allocation"]) == ["a", "b", "c", "d"]
    assert out["objective"] > 0 and out["solve_ms"] >= 0


def test_solve_tokens_mode_reports_its_gap_bound():
    r = krl_solve({"budget": 20000, "min_n": 1, "max_n": 16, "mode": "tokens", "prompts": PROMPTS})
    out = json.loads(r.stdout)
    cost = {"a": 300, "b": 100, "c": 500, "d": 300}  # d: the mean of the known lengths
    assert sum(n * cost[k] for k, n in out["allocation"].items()) <= 20000
    assert out["gap_bound"] >= 0


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
            '{"budget": 8, "max_n": 4, "prompts": [{"id": "a", "mean_tokens": NaN}]}',
            "prompts[0].mean_tokens",
        ),
        (
            {"budget": 8, "max_n": 4, "mode": "magic", "prompts": PROMPTS},
            "mode: must be eb, paper, bayes or tokens",
        ),
        ({"budget": 8, "max_n": 4, "prompt": PROMPTS}, "prompt: unknown key"),
        ("{not json", "$: not valid JSON"),
    ],
)
def test_bad_input_gets_a_precise_error(doc, message):
    r = krl_solve(doc)
    assert r.returncode == 2 and r.stdout == ""
    assert message in r.stderr, r.stderr
