"""The allocation session's pure parts: expansion, grouping, outcomes of graded rewards, the
journal's file format (including a torn last line)."""

import json

import pytest

from krl_client import Journal, StepPlan, informative, outcomes, step_metrics


def plan() -> StepPlan:
    return StepPlan(3, "f" * 32, {"x": 2, "y": 3, "z": 0})


def test_expand_and_group_follow_the_allocation_order():
    p = plan()
    assert p.expand(["X", "Y", "Z"]) == ["X", "X", "Y", "Y", "Y"]
    assert p.group_index() == [0, 0, 1, 1, 1]
    assert p.groups([1, 2, 3, 4, 5]) == {"x": [1, 2], "y": [3, 4, 5], "z": []}
    with pytest.raises(ValueError, match="2 rows for 3"):
        p.expand(["X", "Y"])


def test_outcomes_threshold_graded_rewards_and_skip_empty_groups():
    p = plan()
    out = outcomes(p, [0.2, 0.9, 1.0, 0.4, 0.0], success_threshold=0.5, tokens=[1, 2, 3, 4, 5])
    assert [(o.prompt_id, o.successes, o.trials, o.total_tokens) for o in out] == [
        ("x", 1, 2, 3),
        ("y", 1, 3, 12),
    ]
    # a mapping may carry fewer rewards than allocated (unfinished rollouts), never more
    assert outcomes(p, {"y": [1.0]})[0].trials == 1
    with pytest.raises(ValueError, match="allocated 2"):
        outcomes(p, {"x": [1, 1, 1]})
    with pytest.raises(ValueError, match="did not allocate"):
        outcomes(p, {"w": [1]})


def test_informative_is_non_zero_variance():
    assert informative([0.0, 0.5]) and not informative([0.3, 0.3]) and not informative([1.0])
    m = step_metrics(plan(), [0.3, 0.3, 1.0, 0.0, 1.0])
    assert m["knapsack/effective_rollout_ratio"] == pytest.approx(3 / 5)
    assert m["knapsack/all_wrong_ratio"] == 0.5  # x: 0.3 < 1.0 everywhere


def test_journal_round_trip_and_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.record(plan())
    j.mark_reported(3)
    with path.open("a") as f:
        f.write('{"step": 4, "allocation_')  # the process died mid-append
    again = Journal(path)
    assert again.get(3).replayed and again.get(3).n == {"x": 2, "y": 3, "z": 0}
    assert again.reported == {3} and again.get(4) is None
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["allocation_id"] == "f" * 32
    # the torn tail was cut when the journal was opened: the next record has a line of its own
    # and survives the following resume (it used to be glued onto the torn text and lost)
    again.record(StepPlan(4, "e" * 32, {"x": 5}))
    third = Journal(path)
    assert third.get(4).allocation_id == "e" * 32 and third.get(3) is not None
    assert all(json.loads(line) for line in path.read_text().splitlines())
    for bad, why in (
        ('{"step": 1\n{"step": 2, "allocation_id": "a", "n": {}}\n', "line 1"),
        ("42\n", "line 1"),
        ('{"step": 2, "allocation_id": "a", "n": {}}\n{"step": 3}\n', "line 2"),
        ('{"step": 2, "allocation_id": "a", "n": [1]}\n', "line 1"),
    ):
        path.write_text(bad)
        with pytest.raises(ValueError, match=why):
            Journal(path)  # a broken line is named, never skipped
