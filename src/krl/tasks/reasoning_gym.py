"""Tasks from the `reasoning-gym` package's procedural datasets, scored by its own scorers.

The answer field carries what the verifier needs to rebuild the entry (dataset, seed, size,
index, and the level where the dataset has levels here), so the rollout service scores with
`dataset.score_answer` exactly as reasoning-gym does. The gold answer text is kept in the task's
meta (`target`) for the supervised warm-up.

Levels: for the datasets in LEVELS, `reasoning_gym:NAME` is a graded family like `reverse` (one
reasoning-gym configuration per level, train_per_level and heldout_per_level entries each; the
held-out entries come from another seed of the same generator). Other datasets use their
default configuration, one level. Where SHORT has a prompt for the dataset, the task's prompt is
that compact form of the entry (the same content without reasoning-gym's English instructions,
which a from-scratch character-level policy cannot read and which would make every training row
five times as long); the scorer is reasoning-gym's either way. A reference can only name a level of LEVELS, never a
configuration of its own, and its size is bounded (MAX_SIZE), so a request cannot make the
scorer build an arbitrary dataset."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from krl.common.errors import InvalidArgument
from krl.tasks.base import Task, TaskSource

MAX_SIZE = 100_000
"""Largest dataset a reference may name (reasoning-gym builds some datasets whole)."""

LEVELS: dict[str, tuple[dict[str, Any], ...]] = {
    # English words spelt backward, by length: the tiny policy learns it within a CPU run
    "spell_backward": tuple(
        {"min_word_len": lo, "max_word_len": hi}
        for lo, hi in ((3, 4), (5, 5), (6, 6), (7, 7), (8, 8), (9, 10))
    ),
    # integer arithmetic without parentheses or negation, from one-digit sums to three-term
    # two-digit sums: a spread of success rates for the tiny from-scratch policy
    "basic_arithmetic": tuple(
        {
            "min_terms": terms,
            "max_terms": terms,
            "min_digits": digits,
            "max_digits": digits,
            "operators": ops,
            "allow_parentheses": False,
            "allow_negation": False,
        }
        for terms, digits, ops in (
            (2, 1, ("+",)),
            (2, 1, ("+", "-")),
            (3, 1, ("+", "-")),
            (2, 2, ("+",)),
            (2, 2, ("+", "-")),
            (3, 2, ("+", "-")),
        )
    ),
    # how often a letter occurs in a text of 1 to 8 words (an integer answer: a binary reward)
    "letter_counting": tuple({"min_words": w, "max_words": w} for w in (1, 2, 3, 4, 6, 8)),
}


SHORT: dict[str, Callable[[dict[str, Any]], str]] = {
    "spell_backward": lambda e: f"back({e['metadata']['word']})=",
    "letter_counting": lambda e: (
        f"count({e['metadata']['target_letter']},{' '.join(e['metadata']['span'])})="
    ),
}
"""Compact prompts by dataset, from an entry (its metadata)."""


def _config(name: str, level: int | None) -> dict[str, Any]:
    if level is None:
        return {}
    levels = LEVELS.get(name, ())
    if not 1 <= level <= len(levels):
        raise InvalidArgument(
            f"reasoning-gym dataset {name!r} has no level {level} (levels: {len(levels)})",
            field="tasks",
        )
    return levels[level - 1]


@functools.lru_cache(maxsize=32)
def dataset(name: str, seed: int, size: int, level: int | None = None) -> Any:
    import reasoning_gym

    if not 1 <= size <= MAX_SIZE:
        raise InvalidArgument(f"size must be in [1, {MAX_SIZE}], got {size}", field="tasks")
    try:
        return reasoning_gym.create_dataset(name, seed=seed, size=size, **_config(name, level))
    except InvalidArgument:
        raise
    except Exception as e:  # reasoning-gym raises ValueError/KeyError for unknown names
        raise InvalidArgument(f"reasoning-gym dataset {name!r}: {e}", field="tasks") from None


def check_reference(answer: str, max_size: int = MAX_SIZE) -> dict[str, Any]:
    """An entry reference parsed and checked without building its dataset (the rollout service
    checks every prompt's before generating): a JSON object naming a registered dataset, an int
    seed, 1 <= size <= max_size, 0 <= index < size, and a level the dataset has."""
    from reasoning_gym.factory import DATASETS

    try:
        ref = json.loads(answer)
    except (ValueError, RecursionError) as e:
        raise InvalidArgument(f"is not a JSON entry reference: {e}", field="answer") from None
    if not isinstance(ref, dict) or not {"dataset", "seed", "size", "index"} <= set(ref):
        raise InvalidArgument(
            "reasoning_gym answers are entry references {dataset, seed, size, index[, level]}",
            field="answer",
        )
    name, level = ref["dataset"], ref.get("level")
    ints = [ref["seed"], ref["size"], ref["index"], *([] if level is None else [level])]
    if not all(type(x) is int for x in ints):
        raise InvalidArgument("seed, size, index and level must be integers", field="answer")
    if name not in DATASETS:
        raise InvalidArgument(f"no reasoning-gym dataset {name!r}", field="answer")
    if not 1 <= ref["size"] <= max_size:
        raise InvalidArgument(f"size must be in [1, {max_size}]", field="answer")
    if not 0 <= ref["index"] < ref["size"]:
        raise InvalidArgument(f"index must be in [0, {ref['size']})", field="answer")
    if level is not None and not 1 <= level <= len(LEVELS.get(name, ())):
        raise InvalidArgument(
            f"dataset {name!r} has no level {level} (levels: {len(LEVELS.get(name, ()))})",
            field="answer",
        )
    return ref


def entry_ref(name: str, seed: int, size: int, index: int, level: int | None = None) -> str:
    ref: dict[str, Any] = {"dataset": name, "seed": seed, "size": size, "index": index}
    if level is not None:
        ref["level"] = level
    return json.dumps(ref)


def _tasks(name: str, seed: int, size: int, split: str, level: int | None) -> list[Task]:
    if level is not None:  # levels draw apart (one seed for all would repeat the same numbers)
        seed += 7919 * level
    ds = dataset(name, seed, size, level)
    tag = "" if level is None else f"-L{level}"
    prompt = SHORT.get(name, lambda e: e["question"])
    return [
        Task(
            id=f"rg-{name}-s{seed}-{split}{tag}-{i:05d}",
            prompt=prompt(ds[i]),
            answer=entry_ref(name, seed, size, i, level),
            verifier="reasoning_gym",
            level=level,
            meta={"target": str(ds[i]["answer"])},
        )
        for i in range(size)
    ]


class ReasoningGymSource(TaskSource):
    name = "reasoning_gym"

    def __init__(
        self, dataset_name: str, *, seed: int = 0, train_size: int = 1000, heldout_size: int = 100
    ) -> None:
        """train_size and heldout_size count per level for a leveled dataset."""
        levels: list[int | None] = list(range(1, len(LEVELS.get(dataset_name, ())) + 1))
        train: list[Task] = []
        heldout: list[Task] = []
        for lv in levels or [None]:
            tr = _tasks(dataset_name, seed, train_size, "train", lv)
            seen = {t.prompt for t in tr}
            train += tr
            # held-out entries: another seed of the same generator, never a training question
            ev = _tasks(dataset_name, seed + 1_000_003, heldout_size, "eval", lv)
            heldout += [t for t in ev if t.prompt not in seen]
        super().__init__(train, heldout)
        self.name = f"reasoning_gym:{dataset_name}"
