import json

import pytest

from krl.common.errors import InvalidArgument
from krl.rollout import verifiers
from krl.tasks.reasoning_gym import ReasoningGymSource


@pytest.mark.parametrize(
    ("text", "answer", "reward"),
    [
        ("19", "19", 1.0),
        ("19\nmore text", "19", 1.0),
        ("  19.0 ", "19", 1.0),
        ("38/2", "19", 1.0),
        ("-27", "-27", 1.0),
        ("27", "-27", 0.0),
        ("1,000", "1000", 1.0),
        ("so \\boxed{12}", "12", 1.0),
        ("Answer: 7", "7", 1.0),
        ("#### 42", "42", 1.0),
        ("Paris", "paris", 1.0),
        ("Lyon", "Paris", 0.0),
        ("", "1", 0.0),
        ("1/0", "1", 0.0),
    ],
)
def test_exact(text: str, answer: str, reward: float) -> None:
    assert verifiers.exact(text, answer) == reward


def test_math_verify_on_latex() -> None:
    assert verifiers.math("The answer is $\\boxed{\\frac{1}{2}}$", "0.5") == 1.0
    assert verifiers.math("The answer is $\\boxed{\\frac{1}{3}}$", "0.5") == 0.0
    assert verifiers.math("no answer here", "\\frac{1}{2}") == 0.0


def test_reasoning_gym_uses_the_datasets_own_scorer() -> None:
    src = ReasoningGymSource("basic_arithmetic", seed=3, train_size=5, heldout_size=2)
    assert {t.level for t in src.train} == set(range(1, 7))
    for task in (src.train[0], src.train[-1], src.heldout[-1]):
        ref = json.loads(task.answer)
        from krl.tasks.reasoning_gym import dataset

        entry = dataset(ref["dataset"], ref["seed"], ref["size"], ref["level"])[ref["index"]]
        assert entry["question"] == task.prompt and entry["answer"] == task.meta["target"]
        right = task.meta["target"]
        assert verifiers.reasoning_gym(f"<answer>{right}</answer>", task.answer) == 1.0
        assert verifiers.reasoning_gym(right, task.answer) == 1.0
        assert verifiers.reasoning_gym("<answer>nonsense</answer>", task.answer) == 0.0
    with pytest.raises(InvalidArgument, match="entry references"):
        verifiers.reasoning_gym("1", "not json")


def test_reasoning_gym_references_are_bounded_and_checked_before_building() -> None:
    """A reference names a shipped level, a size within MAX_SIZE and an index inside it;
    anything else is refused before reasoning-gym builds a dataset."""
    from krl.tasks.reasoning_gym import MAX_SIZE

    def ref(**kw) -> str:
        base = {"dataset": "spell_backward", "seed": 1, "size": 4, "index": 0, "level": 2}
        return json.dumps({**base, **kw})

    assert verifiers.reasoning_gym("x", ref()) == 0.0
    for bad, why in (
        (ref(size=MAX_SIZE + 1), "size"),
        (ref(size=0, index=0), "outside"),
        (ref(index=4), "outside"),
        (ref(index=-1), "outside"),
        (ref(level=99), "no level 99"),
        (ref(level="x"), "entry references"),
        (ref(dataset="no_such_dataset", level=None), "no_such_dataset"),
    ):
        with pytest.raises(InvalidArgument, match=why):
            verifiers.reasoning_gym("x", bad)


def test_unknown_verifier() -> None:
    with pytest.raises(InvalidArgument, match="unknown verifier 'nope'"):
        verifiers.get("nope")
    assert verifiers.get("") is verifiers.exact


def test_long_numbers_compare_as_text_in_bounded_time() -> None:
    """D1: Fraction(Decimal(...)) is quadratic in the digits; past MAX_NUMBER_CHARS an answer
    compares as text, so even a 200k-digit completion scores in milliseconds."""
    import time

    big = "7" * 200_000
    t = time.perf_counter()
    assert verifiers.exact(big, big) == 1.0
    assert verifiers.exact(big + "1", big) == 0.0
    assert time.perf_counter() - t < 0.5
    assert verifiers.exact("0.50", "1/2") == 1.0  # short numbers still compare by value


def test_a_group_is_scored_with_one_parse_of_its_answer() -> None:
    assert verifiers.score_group("", "6/2", ["3", "3.0", "4", "x"]) == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(InvalidArgument):
        verifiers.score_group("nope", "1", ["1"])


def test_only_short_exact_groups_are_scored_in_place() -> None:
    assert verifiers.cheap("exact", "42", ["42", "x" * 256])
    assert verifiers.cheap("", "42", [])
    assert not verifiers.cheap("exact", "9" * 4096, ["1"])  # a worker: parsing can be slow
    assert not verifiers.cheap("exact", "42", ["4" * 300])
    assert not verifiers.cheap("math", "1/2", ["1/2"])


def test_deeply_nested_answers_are_refused_or_score_zero() -> None:
    """A reference of 2,000 nested brackets is INVALID_ARGUMENT on the answer (it was an
    uncaught RecursionError, an INTERNAL error); such a completion scores 0."""
    deep = "[" * 2000 + "]" * 2000
    with pytest.raises(InvalidArgument) as e:
        verifiers.score_group("reasoning_gym", deep, ["1"])
    assert e.value.field == "answer"
    assert verifiers.score_group("math", "1", [deep, "1"]) == [0.0, 1.0]


def test_letter_counting_levels_and_compact_prompt() -> None:
    """letter_counting by words in the text: the compact prompt carries the letter and the text
    of the entry, and reasoning-gym's scorer gives 1 to the count and 0 to another number."""
    from krl.tasks.reasoning_gym import dataset

    src = ReasoningGymSource("letter_counting", seed=5, train_size=6, heldout_size=2)
    assert {t.level for t in src.train} == set(range(1, 7))
    for task in (src.train[0], src.train[-1], src.heldout[-1]):
        ref = json.loads(task.answer)
        entry = dataset(ref["dataset"], ref["seed"], ref["size"], ref["level"])[ref["index"]]
        letter, span = entry["metadata"]["target_letter"], entry["metadata"]["span"]
        assert task.prompt == f"count({letter},{' '.join(span)})="
        assert len(span) == (1, 2, 3, 4, 6, 8)[ref["level"] - 1]
        right = task.meta["target"]
        assert right == str(" ".join(span).lower().count(letter))
        assert verifiers.reasoning_gym(right, task.answer) == 1.0
        assert verifiers.reasoning_gym(str(int(right) + 1), task.answer) == 0.0
