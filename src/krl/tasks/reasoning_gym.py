"""Tasks from the `reasoning-gym` package's procedural datasets, scored by its own scorers.

The answer field carries what the verifier needs to rebuild the entry (dataset, seed, size,
index), so the rollout service scores with `dataset.score_answer` exactly as reasoning-gym does."""

from __future__ import annotations

import functools
import json
from typing import Any

from krl.common.errors import InvalidArgument
from krl.tasks.base import Task, TaskSource


@functools.lru_cache(maxsize=32)
def dataset(name: str, seed: int, size: int) -> Any:
    import reasoning_gym

    try:
        return reasoning_gym.create_dataset(name, seed=seed, size=size)
    except Exception as e:  # reasoning-gym raises ValueError/KeyError for unknown names
        raise InvalidArgument(f"reasoning-gym dataset {name!r}: {e}", field="tasks") from None


def entry_ref(name: str, seed: int, size: int, index: int) -> str:
    return json.dumps({"dataset": name, "seed": seed, "size": size, "index": index})


def _tasks(name: str, seed: int, size: int, split: str) -> list[Task]:
    ds = dataset(name, seed, size)
    return [
        Task(
            id=f"rg-{name}-s{seed}-{split}-{i:05d}",
            prompt=ds[i]["question"],
            answer=entry_ref(name, seed, size, i),
            verifier="reasoning_gym",
            level=None,
        )
        for i in range(size)
    ]


class ReasoningGymSource(TaskSource):
    name = "reasoning_gym"

    def __init__(
        self, dataset_name: str, *, seed: int = 0, train_size: int = 1000, heldout_size: int = 100
    ) -> None:
        # Held-out entries come from another seed of the same generator.
        super().__init__(
            _tasks(dataset_name, seed, train_size, "train"),
            _tasks(dataset_name, seed + 1_000_003, heldout_size, "eval"),
        )
        self.name = f"reasoning_gym:{dataset_name}"
