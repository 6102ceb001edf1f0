from pathlib import Path

import pytest

from krl.common.errors import InvalidArgument, NotFound
from krl.rollout import verifiers
from krl.tasks import load_source
from krl.tasks.arithmetic import LEVELS, ArithmeticSource


def test_arithmetic_is_deterministic_with_stable_ids_and_right_answers() -> None:
    a = ArithmeticSource(seed=4, train_per_level=50, heldout_per_level=10)
    b = ArithmeticSource(seed=4, train_per_level=50, heldout_per_level=10)
    assert a.train == b.train and a.heldout == b.heldout
    assert a.train[0].id == "arith-s4-train-L1-00000"
    assert {t.level for t in a.train} == set(range(1, LEVELS + 1))
    for t in a.train + a.heldout:
        assert t.prompt.endswith("=")
        assert eval(t.prompt[:-1]) == int(t.answer)  # the arithmetic itself
        assert verifiers.exact(t.answer, t.answer) == 1.0
    assert ArithmeticSource(seed=5, train_per_level=50).train != a.train


def test_heldout_never_repeats_a_training_prompt() -> None:
    src = ArithmeticSource(seed=0, train_per_level=60, heldout_per_level=30)
    assert not {t.prompt for t in src.train} & {t.prompt for t in src.heldout}
    assert len(src.heldout) == 30 * LEVELS
    # Level 1 has only 100 distinct problems: held-out gets what is left, no more.
    small = ArithmeticSource(seed=0, levels=(1,), train_per_level=90, heldout_per_level=30)
    assert len(small.train) == 90 and len(small.heldout) == 10


def test_get_by_id() -> None:
    src = load_source("arithmetic", train_per_level=5, heldout_per_level=2)
    t = src.train[3]
    assert src.get(t.id) is t
    with pytest.raises(NotFound):
        src.get("nope")
    assert src.levels() == list(range(1, LEVELS + 1))


def test_jsonl_source_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "t.jsonl"
    good.write_text(
        '{"id": "a", "prompt": "1+1=", "answer": "2"}\n\n'
        '{"id": "b", "prompt": "x", "answer": "y", "verifier": "math", "split": "heldout", "level": 2}\n'
    )
    src = load_source(f"jsonl:{good}")
    assert [t.id for t in src.train] == ["a"] and src.heldout[0].verifier == "math"
    cases = {
        '{"id": "a", "prompt": "p"}': "t.jsonl:1: 'answer' must be a non-empty string",
        "{not json": "t.jsonl:1: not valid JSON",
        '{"id": "a", "prompt": "p", "answer": "1", "extra": 1}': "unknown fields ['extra']",
        '{"id": "a", "prompt": "p", "answer": "1"}\n{"id": "a", "prompt": "q", "answer": "2"}': "t.jsonl:2: duplicate id 'a'",
        '{"id": "a", "prompt": "p", "answer": "1", "split": "dev"}': "'split' must be",
    }
    for text, msg in cases.items():
        good.write_text(text + "\n")
        with pytest.raises(InvalidArgument, match=msg.replace("[", r"\[").replace("]", r"\]")):
            load_source(f"jsonl:{good}")
    with pytest.raises(InvalidArgument, match="no such file"):
        load_source(f"jsonl:{tmp_path / 'missing.jsonl'}")


def test_unknown_source() -> None:
    with pytest.raises(InvalidArgument, match="unknown task"):
        load_source("gsm8k")
    with pytest.raises(InvalidArgument, match="reasoning-gym dataset"):
        load_source("reasoning_gym:no_such_dataset")


def test_task_specs_parse_in_one_place() -> None:
    from krl.tasks.factory import TaskSpec, parse_task
    from krl.trainer.settings import TrainerSettings

    assert parse_task("reverse") == TaskSpec("reverse")
    assert parse_task("jsonl:/data/x.jsonl") == TaskSpec("jsonl", "/data/x.jsonl")
    assert parse_task("reasoning_gym:basic_arithmetic").arg == "basic_arithmetic"
    for bad in ("reverse:3", "jsonl", "reasoning_gym:", "gsm8k", ""):
        with pytest.raises(InvalidArgument, match="unknown task") as e:
            parse_task(bad)
        assert e.value.field == "task"
        with pytest.raises(ValueError, match="unknown task"):  # the settings refuse it too
            TrainerSettings(task=bad)
